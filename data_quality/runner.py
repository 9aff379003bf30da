"""Runs suites with Great Expectations in a file context rooted in the run folder.

Each run keeps its own GX project (``runs/<run>/gx``: suites, validation definitions,
stored results) and its own Data Docs site (``RunPaths.data_docs``): nothing goes to a
global ``~/gx``, and a run folder is a self-contained record an analyst can open. The
context is guarded by a file lock, since the batches of a run validate in parallel.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_quality.suites import SUITE_VERSION, Check

if TYPE_CHECKING:
    import pandas as pd

SITE = "bevis"


@dataclass
class CheckOutcome:
    check: Check
    success: bool
    element_count: int
    unexpected_count: int
    unexpected_rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    checks: list[CheckOutcome]

    def failed(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.success]


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".gx.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _context(root: Path, docs: Path):
    """The run's GX file context, with its Data Docs site pointed at ``docs``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", project_root_dir=str(root))
    sites = ctx.get_config().data_docs_sites or {}
    wanted = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    if sites.get(SITE) != wanted or set(sites) != {SITE}:
        for name in list(sites):
            ctx.delete_data_docs_site(name)
        ctx.add_data_docs_site(SITE, wanted)
    bars = ctx.variables.progress_bars
    globally = bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)
    if globally is not False:
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        ctx.variables.save()
    return ctx


def run_suite(
    root: Path,
    docs: Path,
    run_name: str,
    suite: str,
    checks: Sequence[Check],
    frame: pd.DataFrame,
    index_columns: Sequence[str],
    validation_name: str | None = None,
    build_docs: bool = False,
) -> SuiteOutcome:
    """Validate ``frame`` against ``checks`` as the GX suite ``suite``; the failing rows of
    each check come back identified by ``index_columns`` (GX result_format COMPLETE with
    unexpected_index_column_names). The result is stored in the run's GX project; Data Docs
    are rebuilt when ``build_docs`` (or later by :func:`build_docs`, once per step)."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    with _locked(root):
        ctx = _context(root, docs)
        ds = ctx.data_sources.add_or_update_pandas("bevis")
        asset_name = validation_name or suite
        try:
            asset = ds.get_asset(asset_name)
        except LookupError:
            asset = ds.add_dataframe_asset(asset_name)
        try:
            batch_def = asset.get_batch_definition("whole")
        except (KeyError, LookupError, ValueError):
            batch_def = asset.add_batch_definition_whole_dataframe("whole")
        gx_suite = gx.ExpectationSuite(
            name=suite,
            expectations=[c.build() for c in checks],
            meta={"bevis_suite_version": SUITE_VERSION},
        )
        gx_suite = ctx.suites.add_or_update(gx_suite)
        vd = ctx.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=asset_name, data=batch_def, suite=gx_suite)
        )
        result = vd.run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": list(index_columns),
                "return_unexpected_index_query": False,
            },
            # an explicit run_time: without it GX parses run_name as a date, and a run id like
            # "20261122T144419-8314" reads as a broken time-zone offset
            run_id=RunIdentifier(run_name=run_name, run_time=datetime.now(UTC)),
        )
        if build_docs:
            ctx.build_data_docs(site_names=[SITE])

    by_name = {c.name: c for c in checks}
    outcomes = []
    for r in result.results:
        name = r.expectation_config.meta.get("check")
        check = by_name[name]
        info = r.exception_info or {}
        if info.get("raised_exception"):
            raise RuntimeError(
                f"suite {suite}, expectation {name} could not be evaluated: "
                f"{str(info.get('exception_message'))[:300]}"
            )
        res = r.result or {}
        rows = [
            {k: row.get(k) for k in index_columns} for row in res.get("unexpected_index_list") or []
        ]
        outcomes.append(
            CheckOutcome(
                check=check,
                success=bool(r.success),
                element_count=int(res.get("element_count") or len(frame)),
                unexpected_count=int(res.get("unexpected_count") or 0),
                unexpected_rows=rows,
            )
        )
    order = {c.name: i for i, c in enumerate(checks)}
    outcomes.sort(key=lambda o: order[o.check.name])
    return SuiteOutcome(suite=suite, success=bool(result.success), checks=outcomes)


def build_docs(root: Path, docs: Path) -> Path:
    """Rebuild the run's Data Docs site; returns its index page."""
    with _locked(root):
        _context(root, docs).build_data_docs(site_names=[SITE])
    return docs_index(docs)


def docs_index(docs: Path) -> Path:
    return docs / "index.html"
