"""The layout of a certificate PDF: A4, Swedish and English, QR code as vectors.

One page per certificate: the QR code (error correction Q, 62 mm, drawn as one filled path
of rectangles: a raw ``re`` operator per horizontal run of dark modules, which is both
smaller and faster than an embedded image), then the human-readable data with bilingual
labels. Text uses an embedded DejaVu Sans subset (:mod:`jobs.steps.fonts`) so every name the
register holds renders (Łukasz, Nguyễn, Øyvind...). The PDF metadata are neutral: no name,
no birth date, no identifier, no timestamps, so equal input gives equal bytes.

:func:`layout` describes a page as drawing operations; :func:`pdf_document` (the fast
writer, used for certificates and for the merged print file of the print house) and
reportlab's canvas (:func:`draw_certificate`, the reference) both draw from it.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jobs.errors import NotRetryable
from jobs.steps.fonts import (
    FONT,
    FONT_BOLD,
    PRIMED_CHARS,
    PRIMED_SUBSET,
    font_subset,
    hex_table,
    prime_fonts,
    register_fonts,
    stream_object,
)

MM = 72 / 25.4
PAGE_W, PAGE_H = 595.2756, 841.8898  # A4 in points
QR_SIZE_MM = 62.0  # at least 35 mm; larger scans better from paper and phone screens

NEUTRAL_METADATA = {
    "title": "EU Digital COVID Certificate",
    "subject": "Vaccination certificate / Vaccinationsintyg",
    "creator": "bevis",
    "keywords": "",
}


@dataclass(frozen=True)
class CertificateView:
    """What the page shows; built from the DCC payload (never from the ledger)."""

    hc1: str
    name: str
    dob: str
    disease: str
    vaccine: str
    manufacturer: str
    prophylaxis: str
    dose: int
    doses: int
    vaccination_date: str
    country: str
    issuer: str
    uvci: str
    valid_until: str | None


@dataclass(frozen=True)
class PostalAddress:
    name: str
    street: str
    postcode: str
    city: str


class RenderError(NotRetryable, ValueError):
    """A payload cannot be shown on a certificate (the message names the UVCI, not the
    person)."""


def view_of(payload: dict[str, Any], hc1: str, exp: int | None = None) -> CertificateView:
    """The page content of a vaccination certificate from its DCC payload."""
    from signing.dcc import display

    vs = payload.get("v") or []
    if not vs:
        raise RenderError("payload has no vaccination entry (only 'v' certificates are rendered)")
    v = vs[0]
    nam = payload.get("nam") or {}
    family, given = nam.get("fn") or nam.get("fnt") or "", nam.get("gn") or nam.get("gnt") or ""
    name = f"{family}, {given}" if family and given else (family or given)
    valid_until = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d") if exp is not None else None
    try:
        return CertificateView(
            hc1=hc1,
            name=name,
            dob=str(payload.get("dob", "")),
            disease=display("disease-agent-targeted", v["tg"]),
            vaccine=display("vaccine-medicinal-product", v["mp"]),
            manufacturer=display("vaccine-mah-manf", v["ma"]),
            prophylaxis=display("vaccine-prophylaxis", v["vp"]),
            dose=int(v["dn"]),
            doses=int(v["sd"]),
            vaccination_date=str(v["dt"]),
            country=display("country-2-codes", v["co"]),
            issuer=str(v["is"]),
            uvci=str(v["ci"]),
            valid_until=valid_until,
        )
    except KeyError as exc:
        raise RenderError(f"certificate {v.get('ci', '?')}: field {exc} missing") from exc


def _qr_operators(hc1: str, x: float, y: float, size: float) -> str:
    """PDF operators for the QR code with its lower-left corner at (x, y): a transform to
    module units (y downwards), then one integer ``re`` per run of dark modules and a
    single fill. Integers keep the stream short and cheap to format."""
    from signing.qr import qr_matrix

    matrix = qr_matrix(hc1)
    m = size / matrix.size
    rects = matrix.rect_operators().decode("ascii")
    return f"q 0 g {m:.4f} 0 0 {-m:.4f} {x:.2f} {y + size:.2f} cm\n{rects}f Q"


def _fields(v: CertificateView) -> list[tuple[str, str]]:
    rows = [
        ("Namn / Name", v.name),
        ("Födelsedatum / Date of birth", v.dob),
        ("Sjukdom / Disease or agent targeted", v.disease),
        ("Vaccin / Vaccine", v.vaccine),
        ("Vaccintyp / Vaccine type", v.prophylaxis),
        ("Tillverkare / Manufacturer", v.manufacturer),
        ("Dos / Dose", f"{v.dose} av {v.doses} / {v.dose} of {v.doses}"),
        ("Vaccinationsdatum / Date of vaccination", v.vaccination_date),
        ("Vaccinationsland / Country of vaccination", v.country),
        ("Utfärdare / Certificate issuer", v.issuer),
        ("Intygsidentitet / Unique certificate identifier", v.uvci),
    ]
    if v.valid_until:
        rows.append(("Signaturen giltig till / Signature valid until", v.valid_until))
    return rows


def _fit(text: str, font: str, size: float, width: float) -> float:
    """The largest font size ≤ ``size`` at which ``text`` fits into ``width``."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    w = stringWidth(text, font, size)
    return size if w <= width else max(5.0, size * width / w)


PRINT_SHIFT = 60 * MM  # a print page is the certificate page moved down below the address


def address_ops(address: PostalAddress) -> list[tuple]:
    """The postal address in the envelope window (C5/E65, left window) of a print page."""
    ops, ay = [], PAGE_H - 50 * MM
    for line in (address.name, address.street, f"{address.postcode} {address.city}"):
        ops.append(("t", FONT, 10, 20 * MM, ay, line))
        ay -= 12
    return ops


def layout(v: CertificateView, address: PostalAddress | None = None) -> list[tuple]:
    """The page as drawing operations, shared by both writers:
    ``("t", font, size, x, y, text)`` and ``("q", x, y, size, hc1)``."""
    margin = 20 * MM
    width = PAGE_W - 2 * margin
    y = PAGE_H - margin
    ops: list[tuple] = []
    if address is not None:
        ops = address_ops(address)
        y -= PRINT_SHIFT
    ops.append(("t", FONT_BOLD, 16, margin, y - 16, "EU:s digitala covidintyg"))
    ops.append(
        (
            "t",
            FONT,
            12,
            margin,
            y - 32,
            "EU Digital COVID Certificate — Vaccinationsintyg / Vaccination",
        )
    )
    y -= 44
    qr = QR_SIZE_MM * MM
    qy = y - qr
    ops.append(("q", (PAGE_W - qr) / 2, qy, qr, v.hc1))
    y = qy - 18
    label_w = 0.46 * width
    for label, value in _fields(v):
        ops.append(("t", FONT, 8.5, margin, y, label))
        size = _fit(value, FONT_BOLD, 10.5, width - label_w)
        ops.append(("t", FONT_BOLD, size, margin + label_w, y, value))
        y -= 16
    y -= 8
    notice = (
        "Intyget är giltigt i EU/EES när QR-koden skannas och signaturen verifieras. Vilka "
        "regler som gäller för resor bestäms av mottagarlandet.",
        "The certificate is valid in the EU/EEA when its QR code is scanned and its signature "
        "verified. Entry rules are set by the country of destination.",
    )
    for para in notice:
        for line in _wrap(para, FONT, 8, width):
            ops.append(("t", FONT, 8, margin, y, line))
            y -= 10
        y -= 4
    return ops


def draw_certificate(c, v: CertificateView, address: PostalAddress | None = None) -> None:
    """Draw one certificate page on a reportlab canvas (the caller calls ``showPage``)."""
    for op in layout(v, address):
        if op[0] == "t":
            _, font, size, x, y, text = op
            c.setFont(font, size)
            c.drawString(x, y, text)
        else:
            _, x, y, size, hc1 = op
            c.addLiteral(_qr_operators(hc1, x, y, size))


@cache
def _wrap(text: str, font: str, size: float, width: float) -> tuple[str, ...]:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and stringWidth(candidate, font, size) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return tuple(lines)


def _canvas(buffer: io.BytesIO, author: str):
    from reportlab.pdfgen.canvas import Canvas

    register_fonts()
    c = Canvas(buffer, pagesize=(PAGE_W, PAGE_H), invariant=1, pageCompression=1)
    c.setTitle(NEUTRAL_METADATA["title"])
    c.setSubject(NEUTRAL_METADATA["subject"])
    c.setCreator(NEUTRAL_METADATA["creator"])
    c.setAuthor(author)  # the issuing authority, never the holder
    c.setKeywords(NEUTRAL_METADATA["keywords"])
    prime_fonts(c)
    return c


def certificate_pdf_reportlab(v: CertificateView, author: str = "Swedish eHealth Agency") -> bytes:
    """The same page through reportlab's document model (reference for the fast writer)."""
    buffer = io.BytesIO()
    c = _canvas(buffer, author)
    draw_certificate(c, v)
    c.showPage()
    c.save()
    return buffer.getvalue()


def certificate_pdf(v: CertificateView, author: str = "Swedish eHealth Agency") -> bytes:
    """One certificate as a complete PDF document (bytes), by the fast writer."""
    register_fonts()
    return pdf_document([layout(v)], NEUTRAL_METADATA | {"author": author})


def print_pdf(
    pages: Iterable[tuple[CertificateView, PostalAddress, bytes | None]],
    target: Path,
    author: str = "Swedish eHealth Agency",
) -> dict[str, int]:
    """The merged print file for the print house: one page per certificate with its
    address in the envelope window. Written to ``target`` (the caller makes it atomic).

    A page is the certificate's own rendered page (the third element: the bytes of its
    PDF, as delivered digitally) moved down below the address: its compressed content
    stream is copied, not drawn again, so the QR code is not encoded a second time. Pages
    whose PDF is missing, or whose address needs characters outside the certificate's font
    subset, are drawn from the layout. Returns pages, reused and drawn."""
    register_fonts()
    prepared, reused = [], 0
    for v, address, cert_pdf in pages:
        ops = layout(v, address)
        subset = _page_subset(ops)
        streams = _reused_streams(cert_pdf, subset, address) if cert_pdf else None
        if streams is None:
            streams = [_content(ops, subset)]
        else:
            reused += 1
        prepared.append((subset, streams))
    target.write_bytes(_assemble(prepared, NEUTRAL_METADATA | {"author": author}))
    return {"pages": len(prepared), "reused": reused, "drawn": len(prepared) - reused}


_CLOSE_SHIFT = zlib.compress(b"\nQ")  # the end of the shift, the same on every page
_CONTENTS_REF = re.compile(rb"/Contents (\d+) 0 R")


def certificate_stream(cert_pdf: bytes) -> bytes | None:
    """The compressed content stream of a one-page certificate PDF written by
    :func:`pdf_document` (None for any other structure)."""
    ref = _CONTENTS_REF.search(cert_pdf)
    if ref is None:
        return None
    head = re.compile(rb"\n%s 0 obj\n<< /Filter /FlateDecode /Length (\d+) >>\nstream\n" % ref[1])
    obj = head.search(cert_pdf)
    if obj is None:
        return None
    start = obj.end()
    data = cert_pdf[start : start + int(obj[1])]
    return data if cert_pdf[start + len(data) : start + len(data) + 10] == b"\nendstream" else None


def _reused_streams(
    cert_pdf: bytes, subset: tuple[int, ...], address: PostalAddress
) -> list[bytes] | None:
    """The content of a print page from the certificate's rendered page: the address, a
    shift down by PRINT_SHIFT, the page's own stream, the end of the shift. None when the
    certificate's page uses another font subset than the print page needs."""
    if b"/BaseFont /" + font_subset(subset).basefont.encode() + b" " not in cert_pdf:
        return None
    stream = certificate_stream(cert_pdf)
    if stream is None:
        return None
    head = _content_text(address_ops(address), subset) + f"\nq 1 0 0 1 0 {-PRINT_SHIFT:.4f} cm\n"
    return [zlib.compress(head.encode("latin-1")), stream, _CLOSE_SHIFT]


# --- the fast writer ---------------------------------------------------------------------
# reportlab's document model rebuilds and reformats the same font objects (widths, cmaps,
# descriptors, the subset itself) for every document, which cost more than the page. The
# certificate page is one fixed structure, so this writer emits it directly: the font
# objects of a subset are built once per process (jobs.steps.fonts, via reportlab's TTF
# subsetter), the page's content stream is written from the layout's operations, and the
# file is assembled with its cross-reference table. Same layout, same fonts, a fraction of
# the time.
# Text uses a simple TrueType encoding: code 0 = .notdef, then PRIMED_CHARS, then the rare
# characters a page adds (Ł, ễ...), at most 255 codes per page (else: reportlab's writer).

FAUX_BOLD = "2 Tr 0.35 w"  # fill + thin stroke: bold without embedding a second font


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _page_subset(ops: list[tuple]) -> tuple[int, ...]:
    chars = set("".join([op[5] for op in ops if op[0] == "t"])).difference(PRIMED_CHARS)
    extra = {ord(ch) for ch in chars}.difference(PRIMED_SUBSET)
    subset = PRIMED_SUBSET + tuple(sorted(extra))
    if len(subset) > 256:
        raise RenderError("a page needs more than 255 distinct characters")
    return subset


def _content_text(ops: list[tuple], subset: tuple[int, ...]) -> str:
    table = hex_table(subset)
    parts = []
    for op in ops:
        if op[0] == "t":
            _, font, size, x, y, text = op
            codes = text.translate(table)
            style = FAUX_BOLD if font == FONT_BOLD else "0 Tr"
            parts.append(f"BT /F1 {size:g} Tf {style} {x:.2f} {y:.2f} Td <{codes}> Tj ET")
        else:
            _, x, y, size, hc1 = op
            parts.append(_qr_operators(hc1, x, y, size))
    return "\n".join(parts)


def _content(ops: list[tuple], subset: tuple[int, ...]) -> bytes:
    """The page's compressed content stream. zlib-ng writes the same zlib format in about
    half the time of the standard library at its default level (0.31 ms instead of 0.56 ms
    per page, 5 % larger); see docs/decisions."""
    from zlib_ng import zlib_ng

    return zlib_ng.compress(_content_text(ops, subset).encode("latin-1"))


def pdf_document(pages: list[list[tuple]], metadata: dict[str, str]) -> bytes:
    """A complete PDF from the layout operations of its pages (see :func:`layout`).
    Pages with the same character subset share one embedded font subset."""
    prepared = []
    for ops in pages:
        subset = _page_subset(ops)
        prepared.append((subset, [_content(ops, subset)]))
    return _assemble(prepared, metadata)


def _assemble(pages: list[tuple[tuple[int, ...], list[bytes]]], metadata: dict[str, str]) -> bytes:
    """The file from pages given as (font subset, compressed content streams)."""
    info = " ".join(f"/{k.capitalize()} {_pdf_string(v)}" for k, v in metadata.items() if v)
    objects: list[bytes] = [
        b"",
        b"",
        f"<< {info} /Producer (bevis) >>".encode("latin-1", "replace"),
    ]
    font_of: dict[tuple[int, ...], int] = {}
    kids = []
    for subset, streams in pages:
        if subset not in font_of:
            font_of[subset] = len(objects) + 1
            objects.extend(font_subset(subset).objects(len(objects) + 1))
        page_no = len(objects) + 1
        kids.append(f"{page_no} 0 R")
        first = page_no + 1
        contents = (
            f"{first} 0 R"
            if len(streams) == 1
            else "[" + " ".join(f"{first + i} 0 R" for i in range(len(streams))) + "]"
        )
        objects.append(
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_W:.4f} {PAGE_H:.4f}] "
                f"/Contents {contents} /Resources << /Font << /F1 {font_of[subset]} 0 R >> "
                "/ProcSet [/PDF /Text] >> >>"
            ).encode()
        )
        objects.extend(stream_object(packed) for packed in streams)
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 3 0 R >>\n"
        f"startxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)
