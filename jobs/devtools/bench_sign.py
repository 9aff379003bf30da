"""``bevis bench sign``: certificates per second, payload JSON → HC1, one core vs all cores.

The payloads are the shipped samples with a fresh UVCI each (so no two certificates are
equal); the signer is the active one from the settings, or throw-away development keys
when none are configured.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any


def sample_payloads() -> list[dict[str, Any]]:
    """The demo payloads in samples/payloads.jsonl (repository checkout)."""
    path = Path(__file__).resolve().parents[2] / "samples" / "payloads.jsonl"
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
    """What ``bevis sign`` does per payload — vet (schema + active value sets) and sign,
    JSON text → HC1 — timed on one core and on ``workers`` processes (default: all cores;
    pool start-up included). Wall-clock rates, plus rates per CPU second (single core, and
    the pool's workers + coordinator: ``parallel_efficiency`` = how much of one core's
    rate each pool core keeps), which stay meaningful on a shared, loaded machine; the
    signing-only rate; and the raw ECDSA cost as a calibration of the machine's state."""
    from jobs.settings import get_settings
    from signing.hcert import sign_checked, sign_many, validity
    from signing.keys import DSC_FILE, init_dev_keys, load_signer

    s = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="bevis-bench-") as tmp:
        if s.key_provider == "file" and not (s.resolved_key_dir() / DSC_FILE).is_file():
            init_dev_keys(Path(tmp) / "keys")
            s = s.model_copy(update={"key_dir": Path(tmp) / "keys", "key_passphrase": None})
        signer = load_signer(s.key_source())
        iat, exp = validity(signer, int(time.time()), s.validity_days)
        lines = payload_lines(n)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        all_workers = min(workers or s.resolved_workers(), cores or 1)
        kw = {"iat": iat, "exp": exp, "keys": s.key_source(), "iss": s.issuer_country}

        sign_checked(lines[: min(n, 300)], workers=1, **kw)  # warm up caches and tables
        w0, c0 = time.perf_counter(), time.process_time()
        single = sign_checked(lines, workers=1, **kw)
        w1, c1 = time.perf_counter(), time.process_time()
        sign_many(lines, workers=1, **kw)
        w2 = time.perf_counter()
        kids0, c2 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
        multi = sign_checked(lines, workers=all_workers, **kw)
        w3 = time.perf_counter()
        kids1, c3 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
        # CPU of the pool = this process + its reaped workers (fork children; forkserver
        # workers are the server's children and do not show up here).
        pool_cpu = (c3 - c2) + sum(
            getattr(kids1, f) - getattr(kids0, f) for f in ("ru_utime", "ru_stime")
        )
        # Calibration on a shared machine: the raw ECDSA signature alone, CPU time.
        data = b"\x00" * 400
        m = min(n, 3000)
        c4 = time.process_time()
        for _ in range(m):
            signer.sign(data)
        ecdsa_us = 1e6 * (time.process_time() - c4) / m
    assert len(single) == len(multi) == n and all(h for h, _ in multi)
    one, many = n / (w1 - w0), n / (w3 - w2)
    return {
        "n": n,
        "provider": s.key_provider,
        "alg": signer.alg,
        "cores": cores,
        "workers": all_workers,
        "single_core_certs_per_s": round(one),
        "all_cores_certs_per_s": round(many),
        "speedup": round(many / one, 2),
        "single_core_certs_per_cpu_s": round(n / max(c1 - c0, 1e-9)),
        "us_per_cert_single_core": round(1e6 * (w1 - w0) / n, 1),
        "all_cores_certs_per_cpu_s": round(n / pool_cpu) if pool_cpu > c3 - c2 else None,
        "parallel_efficiency": (
            round((n / pool_cpu) / (n / max(c1 - c0, 1e-9)), 2) if pool_cpu > c3 - c2 else None
        ),
        "sign_only_single_core_certs_per_s": round(n / (w2 - w1)),
        "ecdsa_us_per_signature_cpu": round(ecdsa_us, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def bench_cose(n: int = 2000) -> dict[str, Any]:
    """µs per COSE_Sign1 signature (ES256, PS256): ours (cbor2 + cryptography) against
    pycose, on the same claims, CPU time of this process."""
    import cbor2
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from pycose.algorithms import Es256, Ps256
    from pycose.headers import KID, Algorithm
    from pycose.keys import EC2Key, RSAKey
    from pycose.messages import Sign1Message

    from signing import cose
    from signing.keys import _file_sign

    claims = cbor2.dumps({1: "SE", 6: 1, 4: 2, -260: {1: sample_payloads()[0]}})
    kid = b"\x01" * 8
    out: dict[str, Any] = {"n": n}
    for alg, key, pycose_alg, key_cls in (
        ("ES256", ec.generate_private_key(ec.SECP256R1()), Es256, EC2Key),
        ("PS256", rsa.generate_private_key(65537, 2048), Ps256, RSAKey),
    ):
        signer = type(
            "S", (), {"alg": alg, "kid": kid, "sign": staticmethod(_file_sign(key, alg))}
        )()
        m = n if alg == "ES256" else max(1, n // 10)  # RSA signing is slow either way
        t0 = time.process_time()
        for _ in range(m):
            cose.sign1(claims, signer)
        ours = (time.process_time() - t0) / m
        ck = key_cls._from_cryptography_key(key)
        t0 = time.process_time()
        for _ in range(m):
            msg = Sign1Message(phdr={Algorithm: pycose_alg, KID: kid}, payload=claims)
            msg.key = ck
            msg.encode()
        theirs = (time.process_time() - t0) / m
        out[alg] = {
            "ours_us": round(ours * 1e6, 1),
            "pycose_us": round(theirs * 1e6, 1),
            "ratio": round(theirs / ours, 1),
        }
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return out
