"""Synthetic payloads: schema-valid DCC payload rows of invented people, for benchmarks
and drills of the batch machinery without the upstream steps."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any


def synthetic_payloads(n: int, seed: int = 0, prefix: str = "SYN") -> Any:
    """``n`` schema-valid DCC payload rows (transforms.schemas.PAYLOADS) of invented people,
    for benchmarks and drills of the batch machinery without the upstream steps. Order ids
    and UVCIs carry ``prefix`` and ``seed`` so that separate calls never collide."""
    import json
    import random

    import pyarrow as pa

    from transforms.schemas import PAYLOADS

    rnd = random.Random(seed)
    products = [
        ("EU/1/20/1528", "ORG-100030215"),
        ("EU/1/20/1507", "ORG-100031184"),
        ("EU/1/20/1525", "ORG-100001417"),
    ]
    given = ["ANNA", "ERIK", "MARIA", "KARL", "SARA", "JOHAN", "LINNEA", "OSKAR"]
    family = ["ANDERSSON", "JOHANSSON", "KARLSSON", "NILSSON", "ERIKSSON", "LARSSON"]
    cols: dict[str, list] = {name: [] for name in PAYLOADS.names}
    for i in range(n):
        order_id = f"{prefix}{seed:03d}-{i:08d}"
        uvci = f"URN:UVCI:01:SE:EHM/{prefix}{seed:03d}{i:010d}"
        mp, ma = products[i % len(products)]
        year = 1930 + rnd.randrange(75)
        dob = f"{year}-{1 + rnd.randrange(12):02d}-{1 + rnd.randrange(28):02d}"
        gn, fn = rnd.choice(given), rnd.choice(family)
        dn = 1 + rnd.randrange(3)
        vdate = f"2021-{1 + rnd.randrange(12):02d}-{1 + rnd.randrange(28):02d}"
        payload = {
            "ver": "1.3.3",
            "nam": {"fn": fn.title(), "fnt": fn, "gn": gn.title(), "gnt": gn},
            "dob": dob,
            "v": [
                {
                    "tg": "840539006",
                    "vp": "1119349007",
                    "mp": mp,
                    "ma": ma,
                    "dn": dn,
                    "sd": max(dn, 2),
                    "dt": vdate,
                    "co": "SE",
                    "is": "Swedish eHealth Agency",
                    "ci": uvci,
                }
            ],
        }
        age = 2026 - year
        cols["order_id"].append(order_id)
        cols["pid"].append(hashlib.sha256(order_id.encode()).hexdigest()[:32])
        cols["uvci"].append(uvci)
        cols["cert_type"].append("v")
        cols["payload_json"].append(json.dumps(payload, separators=(",", ":")))
        cols["person_id"].append(None)
        cols["protected_identity"].append(False)
        cols["address_street"].append(None)
        cols["address_postcode"].append(None)
        cols["address_city"].append(None)
        cols["county"].append(f"{1 + i % 25:02d}")
        cols["age_band"].append(
            f"{min(age // 10 * 10, 80)}+" if age >= 80 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"
        )
        cols["product"].append(mp)
        cols["dn"].append(dn)
        cols["sd"].append(max(dn, 2))
        cols["vaccination_date"].append(datetime.strptime(vdate, "%Y-%m-%d").date())
    return pa.table(cols, schema=PAYLOADS)
