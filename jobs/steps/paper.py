"""The paper channel: the print-house queue of a batch.

After the digital delivery of a batch (:func:`jobs.steps.deliver.deliver_batch`), every
certificate whose outcome is PAPER goes into one merged print PDF, sorted by postcode,
with the postal address in the envelope window, and a CSV manifest for the print house.
The pages reuse the certificates' rendered PDFs where they can (``jobs.steps.pdf.print_pdf``).
"""

from __future__ import annotations

import csv
import io
import json

from jobs.ids import pdf_name, run_of
from jobs.log import get_logger
from jobs.settings import Settings, get_settings

log = get_logger(__name__)

FILE_MODE = 0o600
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such a
# cell of the manifest is prefixed with an apostrophe, which shows the text as it is.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: object) -> object:
    """A manifest cell a spreadsheet will not run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_print_queue(batch_id: str, settings: Settings | None = None) -> int:
    """One merged print PDF and a CSV manifest for the print house, with every PAPER
    certificate of the batch (sorted by postcode). Idempotent: rewritten only when the set
    of certificates changed. Files are readable by their owner only. Returns pages."""
    import pyarrow.parquet as pq
    from sqlalchemy import select

    from jobs.db import engine
    from jobs.ledger.models import Certificate, Outcome
    from jobs.steps.pdf import PostalAddress, print_pdf, view_of
    from jobs.storage import RunPaths, atomic_path, write_text_atomic

    s = settings or get_settings()
    with engine(s.resolved_ledger_url()).connect() as conn:
        uvcis = set(
            conn.scalars(
                select(Certificate.uvci).where(
                    Certificate.batch_id == batch_id, Certificate.outcome == Outcome.PAPER
                )
            )
        )
    paths = RunPaths.of(run_of(batch_id), s)
    folder = paths.print_dir(batch_id)
    manifest, pdf = folder / "manifest.csv", folder / "print.pdf"
    if not uvcis:
        return 0
    if manifest.exists() and pdf.exists():
        with open(manifest, encoding="utf-8", newline="") as fh:
            if {r["uvci"] for r in csv.DictReader(fh)} == uvcis:
                return len(uvcis)
    signed = pq.read_table(paths.signed(batch_id), columns=["uvci", "hc1", "exp"]).to_pylist()
    hc1 = {r["uvci"]: (r["hc1"], r["exp"]) for r in signed if r["uvci"] in uvcis}
    cols = [
        "uvci",
        "order_id",
        "payload_json",
        "address_street",
        "address_postcode",
        "address_city",
    ]
    rows = [
        r for r in pq.read_table(paths.batch_payloads(batch_id), columns=cols).to_pylist()
        if r["uvci"] in uvcis
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["address_postcode"] or "", r["uvci"]))

    pdf_dir = paths.pdf_dir(batch_id)
    pages, out = [], io.StringIO()
    w = csv.writer(out)
    w.writerow(["page", "uvci", "order_id", "document", "name", "street", "postcode", "city"])
    for n, r in enumerate(rows, start=1):
        code, exp = hc1[r["uvci"]]
        payload = json.loads(r["payload_json"])
        view = view_of(payload, code, exp)
        nam = payload.get("nam", {})
        name = " ".join(x for x in (nam.get("gn"), nam.get("fn")) if x)
        address = PostalAddress(name, r["address_street"], r["address_postcode"], r["address_city"])
        try:  # the page as rendered for the digital mailbox, reused (see print_pdf)
            rendered = (pdf_dir / pdf_name(r["uvci"])).read_bytes()
        except OSError:
            rendered = None
        pages.append((view, address, rendered))
        cells = [n, r["uvci"], r["order_id"], pdf_name(r["uvci"]), name]
        cells += [address.street, address.postcode, address.city]
        w.writerow([neutralised(c) for c in cells])
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    with atomic_path(pdf, FILE_MODE) as tmp:
        drawn = print_pdf(pages, tmp, author=s.issuer_name)
    write_text_atomic(out.getvalue(), manifest, FILE_MODE)
    log.info("print_queue", batch_id=batch_id, **drawn)
    return len(pages)
