"""The embedded fonts of the certificate PDF: DejaVu Sans, registered once, subset once.

Two writers draw the page (see :mod:`jobs.steps.pdf`) and both embed subsets of the same
TrueType font. For reportlab's canvas: :func:`register_fonts` loads the TTFs once per
process, remembers their subsets and the compressed form of each (``_CachedFlate``), and
:func:`prime_fonts` gives the characters every page uses the first codes. For the fast
writer: :func:`font_subset` builds the Font, FontDescriptor, FontFile2 and ToUnicode
objects of a subset once per process, with the font's ``name`` table slimmed, and
:func:`hex_table` encodes text in the subset's codes. The fonts and their licence live in
``jobs/steps/assets``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"

# Characters every page uses (labels, digits, Latin letters, Swedish letters). Touching them
# first makes the font subsets of almost every document identical, so the subset (and its
# compressed stream) is built once per process instead of once per page.
PRIMED_CHARS = "".join(chr(c) for c in range(0x20, 0x7F)) + "åäöÅÄÖéÉüÜ—" + "’"
_FONT_STREAMS: dict[bytes, bytes] = {}  # uncompressed subset → compressed, per process


class _CachedFlate:
    """FlateDecode that remembers the compressed form of font subsets (the expensive,
    repeated part of every save); other streams are compressed as usual."""

    pdfname = "FlateDecode"

    def encode(self, text: str | bytes) -> bytes:
        if isinstance(text, str):
            text = text.encode("utf-8")
        hit = _FONT_STREAMS.get(text)
        return hit if hit is not None else zlib.compress(text)

    def decode(self, encoded: bytes) -> bytes:
        return zlib.decompress(encoded)


@cache
def register_fonts() -> None:
    """Register the embedded TTFs once per process (parsing DejaVu takes ~50 ms), with a
    cache of their subsets, and switch off ASCII85 (binary streams are 20 % smaller)."""
    from functools import lru_cache

    from reportlab import rl_config
    from reportlab.pdfbase import pdfdoc, pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    rl_config.useA85 = 0
    pdfdoc.PDFZCompress = _CachedFlate()
    for name, file in ((FONT, "DejaVuSans.ttf"), (FONT_BOLD, "DejaVuSans-Bold.ttf")):
        font = TTFont(name, str(ASSETS / file))
        make_subset = font.face.makeSubset

        @lru_cache(maxsize=256)
        def cached_subset(subset: tuple[int, ...], _make=make_subset) -> bytes:
            data = _make(list(subset))
            if len(_FONT_STREAMS) < 512:
                _FONT_STREAMS[data] = zlib.compress(data)
            return data

        font.face.makeSubset = lambda subset, _c=cached_subset: _c(tuple(subset))
        pdfmetrics.registerFont(font)


def prime_fonts(c) -> None:
    """Give the primed characters the first codes of each font's subset in this document."""
    from reportlab.pdfbase import pdfmetrics

    for name in (FONT, FONT_BOLD):
        pdfmetrics.getFont(name).splitString(PRIMED_CHARS, c._doc)


# The fast writer's encoding (a simple TrueType encoding): code 0 = .notdef, then
# PRIMED_CHARS, then the rare characters a page adds (Ł, ễ...), at most 255 codes a page.
PRIMED_SUBSET = (0, *dict.fromkeys(ord(ch) for ch in PRIMED_CHARS))


@dataclass(frozen=True)
class FontSubset:
    """The PDF objects of one subset of DejaVu Sans, compressed once per process."""

    basefont: str
    widths: str
    fontfile: bytes  # compressed
    fontfile_length: int
    cmap: bytes  # compressed

    def objects(self, first: int) -> list[bytes]:
        """Font, FontDescriptor, FontFile2, ToUnicode numbered from ``first``."""
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import FF_NONSYMBOLIC, FF_SYMBOLIC

        face = pdfmetrics.getFont(FONT).face
        flags = (face.flags & ~FF_NONSYMBOLIC) | FF_SYMBOLIC
        bbox = " ".join(f"{b:g}" for b in face.bbox)
        n = self.widths.count(" ") + 1
        return [
            (
                f"<< /Type /Font /Subtype /TrueType /BaseFont /{self.basefont} /FirstChar 0 "
                f"/LastChar {n - 1} /Widths [{self.widths}] "
                f"/FontDescriptor {first + 1} 0 R /ToUnicode {first + 3} 0 R >>"
            ).encode(),
            (
                f"<< /Type /FontDescriptor /Ascent {face.ascent} /CapHeight {face.capHeight} "
                f"/Descent {face.descent} /Flags {flags} /FontBBox [{bbox}] "
                f"/FontName /{self.basefont} /ItalicAngle {face.italicAngle} /StemV {face.stemV} "
                f"/FontFile2 {first + 2} 0 R /MissingWidth {face.defaultWidth} >>"
            ).encode(),
            stream_object(self.fontfile, f"/Length1 {self.fontfile_length}"),
            stream_object(self.cmap),
        ]


def stream_object(packed: bytes, extra: str = "") -> bytes:
    """A PDF stream object around already compressed bytes."""
    head = f"<< /Filter /FlateDecode /Length {len(packed)} {extra}>>\nstream\n".encode()
    return head + packed + b"\nendstream"


def _slim_name_table(font: bytes) -> bytes:
    """The font with its 'name' table cut to name ids 0-7 (copyright, family, style, unique
    id, full name, version, PostScript name, trademark) — what fontTools' subsetter keeps
    by default. DejaVu's table also carries the whole licence text (15 kB per document);
    the licence ships with the source in jobs/steps/assets."""
    import struct

    num = struct.unpack(">H", font[4:6])[0]
    tables = {}
    for i in range(num):
        tag, _cs, off, ln = struct.unpack(">4sIII", font[12 + 16 * i : 28 + 16 * i])
        tables[tag] = font[off : off + ln]
    name = tables.get(b"name")
    if name is None:
        return font
    _fmt, count, storage = struct.unpack(">HHH", name[:6])
    records, strings = [], b""
    for i in range(count):
        pid, eid, lid, nid, ln, off = struct.unpack(">6H", name[6 + 12 * i : 18 + 12 * i])
        if nid <= 7:
            text = name[storage + off : storage + off + ln]
            records.append((pid, eid, lid, nid, len(text), len(strings)))
            strings += text
    head = struct.pack(">HHH", 0, len(records), 6 + 12 * len(records))
    tables[b"name"] = head + b"".join(struct.pack(">6H", *r) for r in records) + strings
    if b"head" in tables:  # checkSumAdjustment is recomputed below
        tables[b"head"] = tables[b"head"][:8] + b"\0\0\0\0" + tables[b"head"][12:]

    def checksum(data: bytes) -> int:
        data += b"\0" * (-len(data) % 4)
        return sum(struct.unpack(f">{len(data) // 4}I", data)) & 0xFFFFFFFF

    tags = sorted(tables)
    out_dir, body = bytearray(font[:12]), bytearray()
    offset = 12 + 16 * len(tags)
    for tag in tags:
        data = tables[tag]
        out_dir += struct.pack(">4sIII", tag, checksum(data), offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    result = bytearray(out_dir + body)
    if b"head" in tables:
        pos = result.find(b"head", 12, 12 + 16 * len(tags))
        head_off = struct.unpack(">I", result[pos + 8 : pos + 12])[0]
        adjust = (0xB1B0AFBA - checksum(bytes(result))) & 0xFFFFFFFF
        result[head_off + 8 : head_off + 12] = struct.pack(">I", adjust)
    return bytes(result)


@cache
def font_subset(subset: tuple[int, ...]) -> FontSubset:
    """The embedded subset of DejaVu Sans for these code points (code i = subset[i]);
    built once per process and subset."""
    import hashlib

    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import makeToUnicodeCMap

    face = pdfmetrics.getFont(FONT).face
    tag = "".join(chr(65 + b % 26) for b in hashlib.sha256(repr(subset).encode()).digest()[:6])
    basefont = f"{tag}+{face.name.decode('latin-1')}"
    fontfile = _slim_name_table(face.makeSubset(list(subset)))
    return FontSubset(
        basefont=basefont,
        widths=" ".join(f"{face.getCharWidth(c):g}" for c in subset),
        fontfile=zlib.compress(fontfile),
        fontfile_length=len(fontfile),
        cmap=zlib.compress(makeToUnicodeCMap(basefont, list(subset)).encode("latin-1")),
    )


class _HexTable(dict):
    """str.translate table: a character → the two hex digits of its code in a font
    subset; characters outside the subset are code 0 (.notdef)."""

    def __missing__(self, key: int) -> str:
        return "00"


@cache
def hex_table(subset: tuple[int, ...]) -> _HexTable:
    """Text → the hex codes of its characters in a font subset (for ``<...> Tj``)."""
    table = _HexTable({c: f"{i:02x}" for i, c in enumerate(subset)})
    table[0xA0] = table[0x20]  # no-break space is drawn as a space
    return table
