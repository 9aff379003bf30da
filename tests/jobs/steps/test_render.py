"""PDF rendering: the QR code read back by an independent decoder (ZBar) from the rendered
page, Unicode names, neutral metadata, private files, idempotent reruns."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from tests.conftest import DCC

VECTORS = sorted(DCC.glob("testdata/*/2DCode/raw/*.json"))


def _vaccination_vectors(limit: int) -> list[dict]:
    out = []
    for path in VECTORS:
        d = json.loads(path.read_text())
        j, hc1 = d.get("JSON"), d.get("PREFIX")
        if isinstance(j, dict) and j.get("v") and isinstance(hc1, str) and hc1.startswith("HC1:"):
            out.append(d)
        if len(out) >= limit:
            break
    return out


def _page_image(pdf: bytes, scale: float = 2.0):
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        return doc[0].render(scale=scale).to_pil().convert("L")
    finally:
        doc.close()


def _page_text(pdf: bytes) -> str:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        return doc[0].get_textpage().get_text_range()
    finally:
        doc.close()


def test_qr_decoded_from_rendered_page_equals_hc1() -> None:
    from jobs.steps.pdf import certificate_pdf, view_of
    from signing.qr import decode_qr

    for vector in _vaccination_vectors(3):
        pdf = certificate_pdf(view_of(vector["JSON"], vector["PREFIX"], 1767225600))
        assert decode_qr(_page_image(pdf)) == [vector["PREFIX"]]


def test_page_shows_unicode_names_and_display_names() -> None:
    from jobs.steps.pdf import certificate_pdf, view_of
    from signing.dcc import display

    vector = _vaccination_vectors(1)[0]
    payload = json.loads(json.dumps(vector["JSON"]))
    payload["nam"].update(fn="Nguyễn", gn="Łukasz Øyvind")
    pdf = certificate_pdf(view_of(payload, vector["PREFIX"], 1767225600))
    text = _page_text(pdf)
    v = payload["v"][0]
    for expected in (
        "Nguyễn, Łukasz Øyvind",
        display("vaccine-medicinal-product", v["mp"]),
        display("vaccine-mah-manf", v["ma"]),
        display("disease-agent-targeted", v["tg"]),
        f"{v['dn']} av {v['sd']} / {v['dn']} of {v['sd']}",
        v["ci"],
        "Födelsedatum / Date of birth",
        "2026-01-01",
    ):
        assert expected in text, expected
    assert b"/FontFile2" in pdf  # the TTF is embedded


def test_metadata_is_neutral() -> None:
    import pypdfium2 as pdfium

    from jobs.steps.pdf import certificate_pdf, view_of

    vector = _vaccination_vectors(1)[0]
    payload = vector["JSON"]
    pdf = certificate_pdf(view_of(payload, vector["PREFIX"], 1767225600))
    meta = pdfium.PdfDocument(pdf).get_metadata_dict()
    blob = json.dumps(meta)
    for personal in (payload["nam"]["fn"], payload["nam"].get("gn", "-"), payload["dob"]):
        assert personal not in blob
    assert meta["Title"] == "EU Digital COVID Certificate"
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")


def test_bad_payload_named_by_uvci() -> None:
    from jobs.steps.pdf import RenderError, view_of

    vector = _vaccination_vectors(1)[0]
    payload = json.loads(json.dumps(vector["JSON"]))
    del payload["v"][0]["mp"]
    with pytest.raises(RenderError, match=re.escape(payload["v"][0]["ci"])):
        view_of(payload, vector["PREFIX"])


def test_render_file_private_files_hash_names_idempotent(bevis_env: Path, tmp_path: Path) -> None:
    from jobs.steps.render import pdf_name, render_file

    vectors = _vaccination_vectors(4)
    certs = tmp_path / "certs.jsonl"
    lines = []
    for i, vec in enumerate(vectors):
        rec = {
            "ci": vec["JSON"]["v"][0]["ci"],
            "kid": "AAAAAAAAAAA=",
            "iat": 1,
            "exp": 2,
            "hc1": vec["PREFIX"],
        }
        if i % 2:  # half with the payload column, half decoded from the HC1
            rec["payload"] = vec["JSON"]
        lines.append(json.dumps(rec))
    certs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pdfs"
    result = render_file(certs, out, workers=1)
    assert result == {"rendered": len(vectors), "skipped": 0, "failed": []}
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(pdf_name(v["JSON"]["v"][0]["ci"]) for v in vectors)
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        for v in vectors:
            assert v["JSON"]["nam"]["fn"] not in f.name
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700

    # a file damaged by a crash is rendered again; complete ones are kept
    files[0].write_bytes(b"%PDF-1.4 trunc")
    again = render_file(certs, out, workers=1)
    assert again == {"rendered": 1, "skipped": len(vectors) - 1, "failed": []}


def test_payload_from_hc1_matches_vector() -> None:
    from signing.verify import decode_dcc as payload_from_hc1

    for vector in _vaccination_vectors(3):
        assert payload_from_hc1(vector["PREFIX"]) == vector["JSON"]
    with pytest.raises(ValueError, match="prefix"):
        payload_from_hc1("XX1:abc")


def test_render_batch_reads_run_files_on_a_process_pool(bevis_env: Path) -> None:
    import pyarrow as pa

    from jobs.steps.render import pdf_name, render_batch
    from jobs.storage import RunPaths, write_parquet_atomic
    from transforms.schemas import PAYLOADS, SIGNED

    vectors = _vaccination_vectors(3)
    batch_id = "r1-b0001"
    paths = RunPaths.of("r1")
    signed, payloads = [], []
    for i in range(70):  # enough for the pool path
        vec = vectors[i % len(vectors)]
        uvci = f"URN:UVCI:01:SE:EHM/TEST{i:04d}"
        payload = json.loads(json.dumps(vec["JSON"]))
        payload["v"][0]["ci"] = uvci
        signed.append(
            {
                "order_id": f"o{i}",
                "uvci": uvci,
                "kid": "x",
                "iat": 1,
                "exp": 1767225600,
                "hc1": vec["PREFIX"],
            }
        )
        payloads.append(
            {
                "order_id": f"o{i}",
                "pid": f"p{i}",
                "uvci": uvci,
                "cert_type": "v",
                "payload_json": json.dumps(payload),
            }
        )
    write_parquet_atomic(pa.Table.from_pylist(signed, schema=SIGNED), paths.signed(batch_id))
    write_parquet_atomic(
        pa.Table.from_pylist(payloads, schema=PAYLOADS), paths.batch_payloads(batch_id)
    )

    from jobs.settings import get_settings

    result = render_batch(batch_id, get_settings(workers=2))
    assert (result["rendered"], result["skipped"], result["failed"]) == (70, 0, [])
    pdf = (paths.pdf_dir(batch_id) / pdf_name(signed[5]["uvci"])).read_bytes()
    assert signed[5]["uvci"] in _page_text(pdf)  # the payload column wins over the HC1
    again = render_batch(batch_id)
    assert (again["rendered"], again["skipped"]) == (0, 70)


def test_signed_certificate_round_trip_through_the_page(bevis_env: Path) -> None:
    """Sign with development keys, render, read the QR from the page with ZBar, and the
    signature of what was read verifies against the DSC."""
    import time

    from jobs.devtools.drill import drill_payload
    from jobs.settings import get_settings
    from jobs.steps.pdf import certificate_pdf, view_of
    from signing.hcert import issue, validity
    from signing.keys import init_dev_keys, load_signer
    from signing.qr import decode_qr
    from signing.verify import verify

    s = get_settings()
    init_dev_keys(s.resolved_key_dir(), source=s.key_source())
    signer = load_signer(s.key_source())
    iat = int(time.time())
    iat, exp = validity(signer, iat, 365)
    payload = drill_payload(2, "URN:UVCI:01:SE:EHM/ROUNDTRIP1")
    hc1 = issue(payload, signer, iat=iat, exp=exp)
    page = _page_image(certificate_pdf(view_of(payload, hc1, exp)))
    (read,) = decode_qr(page)
    assert read == hc1
    verdict = verify(read, trust=[signer.dsc])
    assert verdict.valid, verdict.reasons
    assert verdict.payload["nam"]["fn"] == "Kowalski"


def test_print_page_reuses_the_rendered_page_and_looks_the_same(tmp_path: Path) -> None:
    """A print page copies the certificate's rendered content stream (no second QR
    encoding) and is the same picture as a page drawn from the layout; an address with a
    character outside the certificate's font subset is drawn instead."""
    import numpy as np
    import pypdfium2 as pdfium

    from jobs.steps.pdf import PostalAddress, certificate_pdf, print_pdf, view_of
    from signing.qr import decode_qr

    vector = _vaccination_vectors(1)[0]
    view = view_of(vector["JSON"], vector["PREFIX"], 1767225600)
    rendered = certificate_pdf(view)
    plain = PostalAddress("Anna Andersson", "Storgatan 1", "111 22", "Stockholm")
    rare = PostalAddress("Anna Andersson", "Łąkowa 7", "111 22", "Stockholm")
    pages = [(view, plain, rendered), (view, plain, None), (view, rare, rendered)]
    counts = print_pdf(pages, tmp_path / "print.pdf")
    assert counts == {"pages": 3, "reused": 1, "drawn": 2}

    doc = pdfium.PdfDocument(tmp_path / "print.pdf")
    try:
        images = [np.asarray(doc[i].render(scale=2).to_pil().convert("L")) for i in range(3)]
        texts = [doc[i].get_textpage().get_text_range() for i in range(3)]
    finally:
        doc.close()
    diff = np.abs(images[0].astype(int) - images[1].astype(int))
    assert (diff > 64).mean() < 0.001  # the same page, up to anti-aliasing of 0.01 pt
    assert "Storgatan 1" in texts[0] and "Łąkowa 7" in texts[2]
    assert texts[0] == texts[1]
    from PIL import Image

    assert decode_qr(Image.fromarray(images[0])) == [vector["PREFIX"]]


def test_certificate_stream_rejects_other_pdfs() -> None:
    from jobs.steps.pdf import certificate_pdf_reportlab, certificate_stream, view_of

    vector = _vaccination_vectors(1)[0]
    other = certificate_pdf_reportlab(view_of(vector["JSON"], vector["PREFIX"], 1767225600))
    assert certificate_stream(b"%PDF-1.4 nothing here") is None
    assert certificate_stream(other[: len(other) // 2]) is None
