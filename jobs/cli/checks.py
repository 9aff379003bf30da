"""Health checks behind ``bevis doctor``. Each check says what is wrong and what to do."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from jobs.settings import Settings, get_settings

REQUIRED = (
    "apache-airflow",
    "great-expectations",
    "pandas",
    "pyarrow",
    "sqlalchemy",
    "alembic",
    "cryptography",
    "cbor2",
    "pycose",
    "reportlab",
    "zxing-cpp",
    "zint-bindings",
    "httpx",
    "structlog",
)


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


def _python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check(
        "python",
        "ok" if ok else "fail",
        f"Python {sys.version.split()[0]}" + ("" if ok else " — bevis needs 3.11 or newer"),
    )


def _packages() -> list[Check]:
    out = []
    for name in REQUIRED:
        try:
            out.append(Check(f"package {name}", "ok", importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append(Check(f"package {name}", "fail", "not installed — run 'uv sync --frozen'"))
    try:
        import _rl_accel  # noqa: F401

        out.append(Check("reportlab accelerator", "ok", "_rl_accel present"))
    except ImportError:
        out.append(Check("reportlab accelerator", "warn", "rl_accel missing: PDFs render slower"))
    return out


def _database(label: str, url: str, expected_table: str) -> Check:
    from sqlalchemy import inspect

    from jobs.db import engine, safe_url, sqlite_path

    path = sqlite_path(url)
    if path is not None and not path.is_file():  # a check never creates a database
        return Check(
            f"database {label}",
            "warn",
            f"{safe_url(url)} does not exist yet — run 'bevis db migrate' (or 'bevis seed')",
        )
    try:
        names = inspect(engine(url)).get_table_names()
    except Exception as exc:
        return Check(
            f"database {label}", "fail", f"cannot connect to {safe_url(url)}: {type(exc).__name__}"
        )
    if expected_table not in names:
        return Check(
            f"database {label}",
            "warn",
            f"{safe_url(url)} reachable but not migrated — run 'bevis db migrate'",
        )
    return Check(f"database {label}", "ok", safe_url(url))


def _keys(s: Settings) -> Check:
    if s.key_provider == "pkcs11":
        module = Path(s.pkcs11_module)
        if not module.exists():
            return Check(
                "keys", "fail", f"PKCS#11 module {module} not found (apt-get install softhsm2?)"
            )
        return Check("keys", "ok", f"PKCS#11 token '{s.pkcs11_token_label}' via {module}")
    d = s.resolved_key_dir()
    missing = [n for n in ("dsc.pem", "dsc.key") if not (d / n).exists()]
    if missing:
        return Check(
            "keys",
            "warn",
            f"{', '.join(missing)} missing in {d} — run 'bevis keys init-dev --dir {d}'",
        )
    mode = (d / "dsc.key").stat().st_mode & 0o777
    if mode & 0o077:
        return Check(
            "keys", "fail", f"{d / 'dsc.key'} is readable by others (mode {mode:o}); chmod 600 it"
        )
    if not _encrypted_pem(d / "dsc.key"):
        return Check(
            "keys",
            "warn" if s.dev_mode else "fail",
            f"{d / 'dsc.key'} is not encrypted — protect it with a passphrase "
            "(BEVIS_KEY_PASSPHRASE) or keep the key on a token (BEVIS_KEY_PROVIDER=pkcs11)",
        )
    return Check("keys", "ok", str(d))


def _encrypted_pem(path: Path) -> bool:
    """Whether a PEM private key file is encrypted (PKCS#8 or a legacy Proc-Type header)."""
    head = path.read_bytes()[:4096]
    return b"BEGIN ENCRYPTED PRIVATE KEY" in head or b"Proc-Type: 4,ENCRYPTED" in head


def _airflow(s: Settings) -> Check:
    home = s.airflow_home or Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    if not Path(home).exists():
        return Check(
            "airflow home", "warn", f"{home} does not exist yet ('bevis demo' makes its own)"
        )
    return Check("airflow home", "ok", str(home))


def _secrets(s: Settings) -> Check:
    """Published development secrets: fatal outside development mode (bevis refuses to use
    them), a warning inside it."""
    published = s.published_secrets()
    if not published:
        return Check("secrets", "ok", "no published development secret in use")
    names = ", ".join(published)
    if s.dev_mode:
        return Check("secrets", "warn", f"development mode: published {names} in use")
    return Check(
        "secrets",
        "fail",
        f"{names} at a published development value — set real secrets "
        "(docs/deployment.md); BEVIS_DEV_MODE=1 is for the demo and tests only",
    )


def _tools() -> list[Check]:
    out = []
    for tool, why in (("softhsm2-util", "PKCS#11 tests"), ("chromium", "HTML report tests")):
        out.append(
            Check(
                f"tool {tool}",
                "ok" if shutil.which(tool) else "warn",
                shutil.which(tool) or f"not found (needed for {why})",
            )
        )
    return out


def run_checks(settings: Settings | None = None) -> list[Check]:
    """All checks, in the order an operator would fix them."""
    s = settings or get_settings()
    checks = [_python(), *_packages()]
    checks.append(_database("sources", s.resolved_source_url(), "orders"))
    checks.append(_database("ledger", s.resolved_ledger_url(), "runs"))
    checks += [_keys(s), _secrets(s), _airflow(s), *_tools()]
    return checks
