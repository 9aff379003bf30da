"""Names for the DCC: ``fn``/``gn`` as registered, ``fnt``/``gnt`` by ICAO 9303 transliteration.

Our own table (the ``mrz`` package is GPL). ICAO 9303 Part 3, section 6 ("Transliterations
recommended for use by States"): the multinational Latin characters with their
recommended MRZ spelling (Å→AA, Ä→AE, Ö→OE, Ü→UE, ß→SS, Ø→OE, Æ→AE, Œ→OE, Þ→TH, Ĳ→IJ ...),
every other Latin letter by its base letter (NFKD decomposition minus the marks, which
covers Latin Extended-A/B and the Vietnamese letters of Latin Extended Additional), and
the Cyrillic table of the same section. Spaces and hyphens become the filler ``<``;
apostrophes and any other punctuation, digits and unmapped characters are dropped.
Truncation per ICAO 9303 Part 4 (truncation of the name in the MRZ): characters are
removed from the end, and a truncated name never ends in a filler, so its last character
is alphabetic.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MAX_LEN = 80
FILLER = "<"
PATTERN = re.compile(r"^[A-Z<]*$")

# ICAO 9303 Part 3, section 6 — recommended transliterations that differ from "base letter".
_LATIN_SPECIAL = {
    "Å": "AA",
    "Ä": "AE",
    "Æ": "AE",
    "Ö": "OE",
    "Ø": "OE",
    "Œ": "OE",
    "Ü": "UE",
    "ß": "SS",
    "ẞ": "SS",
    "Þ": "TH",
    "Ĳ": "IJ",
    "Ð": "D",
    "Đ": "D",
    "Ħ": "H",
    "Ł": "L",
    "Ŀ": "L",
    "Ŧ": "T",
    "Ŋ": "N",
    "ı": "I",
    "ĸ": "K",
    "ŉ": "N",
    "Ə": "E",
    "Ɛ": "E",
    "Ɔ": "O",
    "Ƒ": "F",
    "Ʒ": "Z",
    "Ɨ": "I",
    "Ʉ": "U",
    "Ɓ": "B",
    "Ɗ": "D",
    "Ƙ": "K",
    "Ƴ": "Y",
}

# ICAO 9303 Part 3, section 6 — Cyrillic.
_CYRILLIC = {
    "А": "A",
    "Б": "B",
    "В": "V",
    "Г": "G",
    "Ґ": "G",
    "Ѓ": "G",
    "Д": "D",
    "Ђ": "D",
    "Е": "E",
    "Ё": "E",
    "Є": "IE",
    "Ж": "ZH",
    "З": "Z",
    "Ѕ": "DZ",
    "И": "I",
    "І": "I",
    "Ї": "I",
    "Й": "I",
    "Ј": "J",
    "К": "K",
    "Ќ": "K",
    "Л": "L",
    "Љ": "LJ",
    "М": "M",
    "Н": "N",
    "Њ": "NJ",
    "О": "O",
    "П": "P",
    "Р": "R",
    "С": "S",
    "Т": "T",
    "Ћ": "C",
    "У": "U",
    "Ў": "U",
    "Ф": "F",
    "Х": "KH",
    "Ц": "TS",
    "Ч": "CH",
    "Џ": "DZ",
    "Ш": "SH",
    "Щ": "SHCH",
    "Ъ": "IE",
    "Ы": "Y",
    "Ь": "",
    "Э": "E",
    "Ю": "IU",
    "Я": "IA",
}

# Separators → filler; apostrophes → nothing (ICAO 9303 Part 3, 4.6 / 6).
_SEPARATORS = " \t\n\r\f\v\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000-\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d"


def _mapping_for(ch: str) -> str:
    """The MRZ spelling of one character ('' when it has none)."""
    if ch in _SEPARATORS or ch == FILLER:  # a filler stays one: transliteration is idempotent
        return FILLER
    up = ch.upper() if len(ch.upper()) == 1 else ch
    for candidate in (ch, up):
        if candidate in _LATIN_SPECIAL:
            return _LATIN_SPECIAL[candidate]
        if candidate in _CYRILLIC:
            return _CYRILLIC[candidate]
    if "A" <= up <= "Z":
        return up
    if ch == "ß":
        return "SS"
    # base letter: NFKD, drop combining marks, keep A-Z (after upper-casing)
    decomposed = unicodedata.normalize("NFKD", ch)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    if base and base != ch:
        out = "".join(_mapping_for(c) for c in base)
        return out.replace(FILLER, "")
    return ""


class _Table(dict):
    """str.translate table computed lazily per code point (and remembered)."""

    def __missing__(self, cp: int) -> str:
        value = _mapping_for(chr(cp))
        self[cp] = value
        return value


_TABLE = _Table()
_FILLERS = re.compile("<{2,}")


def transliterate(name: str | None, max_len: int = MAX_LEN) -> str:
    """ICAO 9303 MRZ spelling of a name: ``^[A-Z<]*$``, at most ``max_len`` characters."""
    if not name:
        return ""
    out = unicodedata.normalize("NFC", name).translate(_TABLE)
    out = _FILLERS.sub(FILLER, out).strip(FILLER)
    if len(out) > max_len:
        out = out[:max_len].rstrip(FILLER)
    return out


def clean_name(name: str | None, max_len: int = MAX_LEN) -> str:
    """``fn``/``gn``: NFC, trimmed, inner whitespace collapsed, at most ``max_len`` characters."""
    if not name:
        return ""
    out = " ".join(unicodedata.normalize("NFC", name).split())
    return out[:max_len].rstrip()


def _per_distinct(values: pd.Series, fn) -> pd.Series:
    """Apply ``fn`` once per distinct value (names repeat a lot), aligned with ``values``."""
    import pandas as pd

    cat = pd.Categorical(values.astype("string"))
    mapped = [fn(c) for c in cat.categories]
    mapped.append("")  # missing
    codes = cat.codes.copy()
    codes[codes < 0] = len(mapped) - 1
    import numpy as np

    return pd.Series(np.asarray(mapped, dtype=object)[codes], index=values.index, dtype=object)


def clean_names(values: pd.Series) -> pd.Series:
    """Vectorised :func:`clean_name` ('' for missing)."""
    return _per_distinct(values, clean_name)


def transliterate_names(values: pd.Series) -> pd.Series:
    """Vectorised :func:`transliterate` ('' for missing)."""
    return _per_distinct(values, transliterate)
