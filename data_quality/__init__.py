"""bevis data quality: Great Expectations suites, their runner, quarantine rules, run gates.

Importing this package is cheap: Great Expectations, pandas and pyarrow are imported only
inside the functions that validate data (importing GX costs seconds).
"""

from __future__ import annotations


class RunGateFailed(RuntimeError):
    """A run-level expectation failed: the run must stop. The message names the suite and
    the expectation (and never any personal data)."""

    def __init__(self, suite: str, failures: list[tuple[str, str]], data_docs: str | None = None):
        self.suite = suite
        self.failures = failures  # (expectation name, what was observed)
        self.data_docs = data_docs
        parts = "; ".join(f"expectation {name}: {observed}" for name, observed in failures)
        where = f" (Data Docs: {data_docs})" if data_docs else ""
        super().__init__(f"run gate failed in suite {suite}: {parts}{where}")


SUITES = ("nvr_extract", "dcc_payload", "signed_batch")

__all__ = ["SUITES", "RunGateFailed"]
