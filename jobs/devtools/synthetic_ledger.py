"""A synthetic ledger for tests and ``bevis bench report``: plausible runs, batches,
certificates, deliveries and quarantine written directly through the ledger's models.
Pseudonymous ids only; deterministic for a seed."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

COUNTIES = ("01", "03", "04", "05", "06", "07", "08", "09", "10", "12", "13", "14", "17",
            "18", "19", "20", "21", "22", "23", "24", "25")  # fmt: skip
AGE_BANDS = ("12-15", "16-17", "18-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89")
PRODUCTS = ("EU/1/20/1528", "EU/1/20/1507", "EU/1/21/1529", "EU/1/20/1525")
REASONS = ("invalid_check_digit", "future_vaccination_date", "unknown_product",
           "dose_out_of_range", "missing_name", "no_vaccination", "schema_invalid")  # fmt: skip
OPERATORS = ("kivra", "min-myndighetspost", "billo")


def synthetic_ledger(
    certificates: int,
    url: str,
    seed: int = 0,
    days: int = 10,
    start: date = date(2026, 11, 1),
    runs: int = 3,
) -> dict[str, int]:
    """Fill the ledger at ``url`` with plausible rows written directly through the models
    (runs, batches, certificates, deliveries with retries and latencies, quarantine), for
    tests and benchmarks. Pseudonymous ids only; deterministic for a seed. Returns counts."""
    from jobs.db import engine, migrate
    from jobs.ledger.models import Batch, Certificate, Delivery, QuarantineEntry, Run

    migrate("ledger", url)
    rng = random.Random(seed)
    tag = f"s{seed}"
    base = datetime(start.year, start.month, start.day, 6, tzinfo=UTC)
    run_ids = [f"syn-{tag}-r{i}" for i in range(runs)]
    run_rows, batch_rows, cert_rows, deliv_rows, q_rows = [], [], [], [], []
    per_run = -(-certificates // runs) if runs else 0
    batch_size = 500
    for i, run_id in enumerate(run_ids):
        started = base + timedelta(days=i * max(1, days // runs), hours=i)
        n = max(0, min(per_run, certificates - i * per_run))
        run_rows.append(
            {
                "id": run_id,
                "started_at": started,
                "finished_at": started + timedelta(seconds=60 + n / 50),
                "state": "SUCCEEDED" if i % 4 != 3 else "FAILED",
                "parameters": {},
                "counts": {},
                "step_seconds": {
                    "extract": round(1 + n / 4000, 3),
                    "sign": round(2 + n / 900, 3),
                    "render": round(2 + n / 300, 3),
                    "deliver": round(1 + n / 700, 3),
                },
            }
        )
        for b in range(-(-n // batch_size)):
            batch_rows.append(
                {
                    "id": f"{run_id}-b{b:04d}",
                    "run_id": run_id,
                    "seq": b,
                    "size": min(batch_size, n - b * batch_size),
                    "state": "DELIVERED",
                    "attempts": 1,
                    "step_seconds": {},
                }
            )
    persons = max(1, int(certificates * 0.8))
    did = 0
    for c in range(certificates):
        r = min(c // per_run, runs - 1) if per_run else 0
        run_id = run_ids[r]
        batch_id = f"{run_id}-b{(c - r * per_run) // batch_size:04d}"
        day = rng.choices(range(days), weights=[1 + (d % 7 < 5) * 3 for d in range(days)])[0]
        issued = base + timedelta(days=day, seconds=rng.randrange(0, 16 * 3600))
        uvci = f"URN:UVCI:01:SE:EHM/{tag}{c:09d}"
        roll = rng.random()
        digital_share = 0.6 + 0.25 * day / max(1, days - 1)
        outcome = (
            "DIGITAL" if roll < digital_share else "PAPER" if roll < 0.97 else
            ("DEFERRED" if roll < 0.99 else None)
        )  # fmt: skip
        dn = rng.choice((1, 2, 2, 3, 3, 3))
        cert_rows.append(
            {
                "uvci": uvci,
                "order_id": f"o-{tag}-{c}",
                "pid": f"pid-{tag}-{rng.randrange(persons):08d}",
                "run_id": run_id,
                "batch_id": batch_id,
                "cert_type": rng.choices("vtr", weights=(95, 3, 2))[0],
                "kid": "AAAAAAAAAAA=",
                "iat": int(issued.timestamp()),
                "exp": int(issued.timestamp()) + 365 * 86400,
                "hc1_sha256": f"{c:064x}",
                "county": rng.choice(COUNTIES) if rng.random() > 0.01 else None,
                "age_band": rng.choice(AGE_BANDS),
                "product": rng.choices(PRODUCTS, weights=(70, 20, 8, 2))[0],
                "dn": dn,
                "sd": max(dn, 2) if dn < 3 else 3,
                "issued_at": issued,
                "outcome": outcome,
            }
        )
        if outcome is None:
            continue
        t = issued + timedelta(minutes=5)
        attempts = []
        if outcome == "DIGITAL":
            op = rng.choices(OPERATORS, weights=(75, 20, 5))[0]
            for _ in range(rng.choices((0, 1, 2), weights=(90, 8, 2))[0]):
                attempts.append(("digital", op, "FAILED", 503))
            attempts.append(("digital", op, "DELIVERED", 201))
        elif outcome == "PAPER":
            if rng.random() < 0.7:
                attempts.append(("digital", None, "UNREACHABLE", None))
            attempts.append(("paper", "printhouse", "QUEUED_PAPER", None))
        else:
            attempts.append(("digital", rng.choice(OPERATORS), "DEFERRED", 503))
        for a, (channel, op, status, http) in enumerate(attempts, start=1):
            did += 1
            deliv_rows.append(
                {
                    "uvci": uvci,
                    "batch_id": batch_id,
                    "attempt": a,
                    "channel": channel,
                    "operator": op,
                    "status": status,
                    "http_status": http,
                    "latency_ms": round(rng.lognormvariate(4.0, 0.6), 2) if http else None,
                    "at": t + timedelta(seconds=a),
                }
            )
    q_n = max(1, certificates // 100)
    for q in range(q_n):
        day = rng.randrange(days)
        q_rows.append(
            {
                "run_id": run_ids[min(q * runs // q_n, runs - 1)],
                "step": "validate",
                "suite": "nvr_extract",
                "reason_code": rng.choices(REASONS, weights=(30, 5, 10, 10, 5, 30, 2))[0],
                "pid": f"pid-{tag}-q{q}",
                "order_id": f"oq-{tag}-{q}",
                "event_id": None,
                "at": base + timedelta(days=day, hours=1),
            }
        )
    with engine(url).begin() as conn:
        for model, data in (
            (Run, run_rows),
            (Batch, batch_rows),
            (Certificate, cert_rows),
            (Delivery, deliv_rows),
            (QuarantineEntry, q_rows),
        ):
            for i in range(0, len(data), 5000):
                conn.execute(model.__table__.insert(), data[i : i + 5000])
    return {
        "runs": len(run_rows),
        "batches": len(batch_rows),
        "certificates": len(cert_rows),
        "deliveries": len(deliv_rows),
        "quarantine": len(q_rows),
    }
