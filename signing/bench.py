"""``bevis bench sign``: certificates per second, payload JSON → HC1, one core vs all cores.

The payloads are the shipped samples with a fresh UVCI each (so no two certificates are
equal); the signer is the active one from the settings, or throw-away development keys
when none are configured.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any


def sample_payloads() -> list[dict[str, Any]]:
    """The demo payloads in samples/payloads.jsonl (repository checkout)."""
    path = Path(__file__).resolve().parents[1] / "samples" / "payloads.jsonl"
    if not path.is_file():  # installed without the samples: a single built-in payload
        path = Path(str(resources.files("signing"))) / ".." / "samples" / "payloads.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def payload_lines(n: int) -> list[str]:
    base = sample_payloads()
    out = []
    for i in range(n):
        p = json.loads(json.dumps(base[i % len(base)]))
        entry = p["v"][0]
        entry["ci"] = f"URN:UVCI:01:SE:EHM/BENCH{i:011d}#{'ABCDEFGHIJ'[i % 10]}"
        out.append(json.dumps(p, ensure_ascii=False))
    return out


def bench_sign(n: int, workers: int | None = None, settings: Any = None) -> dict[str, Any]:
    """Sign ``n`` certificates on one core, then with ``workers`` processes (default: all
    cores), each timed end to end (the pool's start-up included)."""
    from jobs.settings import get_settings
    from signing.hcert import sign_many, validity
    from signing.keys import DSC_FILE, init_dev_keys, load_signer

    s = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="bevis-bench-") as tmp:
        if s.key_provider == "file" and not (s.resolved_key_dir() / DSC_FILE).is_file():
            init_dev_keys(Path(tmp) / "keys")
            s = s.model_copy(update={"key_dir": Path(tmp) / "keys", "key_passphrase": None})
        signer = load_signer(s)
        iat, exp = validity(signer, int(time.time()), s.validity_days)
        lines = payload_lines(n)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        all_workers = workers or s.resolved_workers()

        sign_many(lines[: min(n, 200)], iat=iat, exp=exp, settings=s, workers=1)  # warm up
        t0 = time.perf_counter()
        single = sign_many(lines, iat=iat, exp=exp, settings=s, workers=1)
        t1 = time.perf_counter()
        multi = sign_many(lines, iat=iat, exp=exp, settings=s, workers=all_workers)
        t2 = time.perf_counter()
    assert len(single) == len(multi) == n
    one, many = n / (t1 - t0), n / (t2 - t1)
    return {
        "n": n,
        "provider": s.key_provider,
        "alg": signer.alg,
        "cores": cores,
        "workers": min(all_workers, cores or 1),
        "single_core_certs_per_s": round(one),
        "all_cores_certs_per_s": round(many),
        "us_per_cert_single_core": round(1e6 / one, 1),
        "speedup": round(many / one, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
