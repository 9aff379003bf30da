"""The architecture is data plus a test: import-linter's contracts (pyproject.toml), the
size of product modules, and the proof that the checker sees imports inside functions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 600
# Data, not logic: the name tables of the synthetic register.
LONG_DATA = {"jobs/devtools/seed_names.py"}


def _lint(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_are_kept() -> None:
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "Contracts: 6 kept, 0 broken." in done.stdout


def test_the_checker_sees_a_circle_closed_inside_a_function(tmp_path: Path) -> None:
    """A circle that only closes at run time, through an import in a function body (as
    batches → flow → batches did), breaks the acyclic contract."""
    pkg = tmp_path / "house"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from house import b\n")
    (pkg / "b.py").write_text(
        textwrap.dedent(
            """
            def later():
                from house import a  # only at run time
                return a
            """
        )
    )
    (tmp_path / ".importlinter").write_text(
        textwrap.dedent(
            """
            [importlinter]
            root_package = house

            [importlinter:contract:acyclic]
            name = no circles
            type = acyclic_siblings
            ancestors = house
            """
        )
    )
    env_path = f"PYTHONPATH={tmp_path}"
    done = subprocess.run(
        ["env", env_path, str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout


def test_no_product_module_is_over_600_lines() -> None:
    too_long = []
    for package in ("jobs", "signing", "transforms", "data_quality", "dags"):
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel in LONG_DATA:
                continue
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                too_long.append(f"{rel}: {n}")
    assert not too_long, too_long
