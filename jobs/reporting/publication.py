"""The publication contract: what a report publishes, already suppressed, and the labels
the published tables and the HTML report share.

It sits apart from the code that computes it (:mod:`jobs.reporting.publish`) so that the
HTML report (:mod:`jobs.reporting.html`) can read a publication without importing the
module that builds one. The arrows run publish → {tables, html} → publication, never back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

DIGITAL_REFERENCE = 0.73  # share delivered digitally that management followed
PENDING = "PENDING"  # channel of a certificate whose delivery has not ended yet
UNKNOWN = "unknown"  # label of a missing dimension value in published tables
NO_OPERATOR = "(none)"  # operator of a certificate without a successful delivery attempt


@dataclass
class Publication:
    """Everything a report publishes, already suppressed. ``tables`` are pandas frames (one
    per export); ``figures`` are headline numbers (None when withheld)."""

    date_from: date | None
    date_to: date | None
    threshold: int
    tables: dict[str, Any]
    figures: dict[str, Any]
    refreshed_at: datetime | None
