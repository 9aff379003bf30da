"""A synthetic signed batch in a run folder and the ledger, for delivery drills, tests and
the render and deliver benchmarks — independent of the sign step.

The HC1 strings are well-formed (CBOR → COSE_Sign1 → zlib → Base45) but carry a zero
signature: they exercise rendering and delivery, never verification. Recipients are
synthetic identity-number-shaped strings; nothing here is a real person.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

from jobs.settings import Settings, get_settings
from signing.base45 import b45encode

NAMES = (
    ("Andersson", "Anna", "ANDERSSON", "ANNA"),
    ("Nguyễn", "Văn Minh", "NGUYEN", "VAN<MINH"),
    ("Kowalski", "Łukasz", "KOWALSKI", "LUKASZ"),
    ("Öberg", "Åsa", "OEBERG", "AASA"),
    ("Johansson", "Erik", "JOHANSSON", "ERIK"),
)


def unsigned_hc1(payload: dict[str, Any], iat: int, exp: int) -> str:
    """An HC1 with the real structure and a zero signature (drills only)."""
    import cbor2

    protected = cbor2.dumps({1: -7, 4: b"\x00" * 8})
    claims = cbor2.dumps({1: "SE", 4: exp, 6: iat, -260: {1: payload}})
    cose = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, claims, b"\x00" * 64]))
    return "HC1:" + b45encode(zlib.compress(cose, 9))


def drill_payload(i: int, uvci: str) -> dict[str, Any]:
    fn, gn, fnt, gnt = NAMES[i % len(NAMES)]
    return {
        "ver": "1.3.3",
        "nam": {"fn": fn, "gn": gn, "fnt": fnt, "gnt": gnt},
        "dob": f"{1940 + i % 60}-0{1 + i % 9}-1{i % 10}",
        "v": [
            {
                "tg": "840539006",
                "vp": "1119349007",
                "mp": "EU/1/20/1528",
                "ma": "ORG-100030215",
                "dn": 2,
                "sd": 2,
                "dt": "2021-06-01",
                "co": "SE",
                "is": "Swedish eHealth Agency",
                "ci": uvci,
            }
        ],
    }


def synthetic_batch(
    run_id: str,
    n: int,
    settings: Settings | None = None,
    seq: int = 1,
    without_address: int = 0,
) -> str:
    """Create run, batch and ``n`` certificates (ledger + signed.parquet + payloads.parquet)
    and return the batch id. The first ``without_address`` have no postal address."""
    import pyarrow as pa
    from sqlalchemy.orm import Session

    from jobs.db import engine, migrate
    from jobs.ledger.models import Batch, BatchState, Certificate, Run
    from jobs.storage import RunPaths, write_parquet_atomic
    from transforms.schemas import PAYLOADS, SIGNED

    s = settings or get_settings()
    url = s.resolved_ledger_url()
    migrate("ledger", url)
    batch_id = f"{run_id}-b{seq:04d}"
    iat, exp = 1767225600, 1767225600 + 365 * 86400
    signed, payloads, certs = [], [], []
    for i in range(n):
        uvci = f"URN:UVCI:01:SE:EHM/D{hashlib.sha256(f'{run_id}:{i}'.encode()).hexdigest()[:20].upper()}"
        order_id = f"{run_id}-o{i:06d}"
        payload = drill_payload(i, uvci)
        hc1 = unsigned_hc1(payload, iat, exp)
        has_address = i >= without_address
        signed.append(
            {
                "order_id": order_id,
                "uvci": uvci,
                "kid": "AAAAAAAAAAA=",
                "iat": iat,
                "exp": exp,
                "hc1": hc1,
            }
        )
        payloads.append(
            {
                "order_id": order_id,
                "pid": hashlib.sha256(order_id.encode()).hexdigest()[:32],
                "uvci": uvci,
                "cert_type": "v",
                "payload_json": json.dumps(payload, ensure_ascii=False),
                "person_id": f"{1940 + i % 60}{1 + i % 12:02d}{1 + i % 28:02d}{i % 10000:04d}",
                "protected_identity": False,
                "address_street": f"Storgatan {1 + i % 90}" if has_address else None,
                "address_postcode": f"{11000 + (i * 37) % 80000:05d}" if has_address else None,
                "address_city": "Stockholm" if has_address else None,
                "county": "01",
                "age_band": "40-49",
                "product": "EU/1/20/1528",
                "dn": 2,
                "sd": 2,
            }
        )
        certs.append(
            Certificate(
                uvci=uvci,
                order_id=order_id,
                pid=payloads[-1]["pid"],
                run_id=run_id,
                batch_id=batch_id,
                kid="AAAAAAAAAAA=",
                iat=iat,
                exp=exp,
                hc1_sha256=hashlib.sha256(hc1.encode()).hexdigest(),
                county="01",
                age_band="40-49",
                product="EU/1/20/1528",
                dn=2,
                sd=2,
            )
        )
    paths = RunPaths.of(run_id, s)
    write_parquet_atomic(pa.Table.from_pylist(signed, schema=SIGNED), paths.signed(batch_id))
    write_parquet_atomic(
        pa.Table.from_pylist(payloads, schema=PAYLOADS), paths.batch_payloads(batch_id)
    )
    with Session(engine(url)) as session, session.begin():
        if session.get(Run, run_id) is None:
            session.add(Run(id=run_id))
            session.flush()
        session.add(Batch(id=batch_id, run_id=run_id, seq=seq, size=n, state=BatchState.RENDERED))
        session.flush()
        session.add_all(certs)
    return batch_id
