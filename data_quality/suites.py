"""The expectation suites, as code and versioned with the project.

Each suite is a list of :class:`Check`: one GX expectation, the reason code a failing row
is quarantined under, and a sentence for the analyst that Data Docs shows beside it.

The frames these suites run on carry no personal data: row identity (order id, event id,
pseudonymous id) plus the facts the checks need — booleans computed vectorised in
pandas where GX has no built-in expectation (Luhn, history consistency), and plain
non-identifying columns (product, dose number, name length) where it has. Identity
numbers, names and birth dates never reach GX, so they never reach its stored results
or Data Docs.

Run gates are suites too (``<suite>.gates``), over a one-row frame of run facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_quality import reasons as R

SUITE_VERSION = "2026.11.1"


@dataclass(frozen=True)
class Check:
    """One expectation of a suite."""

    name: str  # stable name; appears in quarantine entries and gate messages
    expectation: str  # GX expectation class, e.g. "ExpectColumnValuesToBeInSet"
    kwargs: dict[str, Any]
    description: str  # for the analyst (Data Docs notes)
    reason_code: str | None = None  # row-level checks: the quarantine reason
    meta: dict[str, Any] = field(default_factory=dict)

    def build(self):
        """The GX expectation object (imports GX)."""
        import great_expectations as gx

        cls = getattr(gx.expectations, self.expectation)
        notes = f"**{self.name}** — {self.description}"
        if self.reason_code:
            notes += f"\n\nFailing rows are quarantined with reason `{self.reason_code}`."
        description = self.description
        if self.reason_code:
            description += f" Failing rows are quarantined as {self.reason_code}."
        return cls(
            **self.kwargs,
            description=f"{self.name}: {description}",
            meta={
                "check": self.name,
                "reason_code": self.reason_code,
                "notes": {"format": "markdown", "content": notes},
                **self.meta,
            },
        )


TRUE = [True]


def _is_true(column: str) -> dict[str, Any]:
    return {"column": column, "value_set": TRUE}


def nvr_extract_checks(
    known_products: frozenset[str], max_dose: int, max_name_length: int
) -> list[Check]:
    """Row-level checks of extract.parquet (one row per order and NVR event)."""
    return [
        Check(
            "vaccination_present",
            "ExpectColumnValuesToBeInSet",
            _is_true("vaccination_present"),
            "The person who ordered has at least one vaccination in the NVR.",
            R.NO_VACCINATION,
        ),
        Check(
            "identity_number_format",
            "ExpectColumnValuesToBeInSet",
            _is_true("identity_number_format_ok"),
            "The identity number has 12 digits with a real date of birth in them "
            "(samordningsnummer: day + 60).",
            R.INVALID_IDENTITY_NUMBER,
        ),
        Check(
            "identity_number_check_digit",
            "ExpectColumnValuesToBeInSet",
            _is_true("identity_number_check_digit_ok"),
            "The last digit of the identity number is its Luhn check digit.",
            R.INVALID_CHECK_DIGIT,
        ),
        Check(
            "dob_plausible",
            "ExpectColumnValuesToBeInSet",
            _is_true("dob_plausible"),
            "The date of birth (population register) is a date (or year-month / year) "
            "from 1890 up to the run date, and not after the vaccination.",
            R.DOB_IMPLAUSIBLE,
        ),
        Check(
            "dob_matches_identity_number",
            "ExpectColumnValuesToBeInSet",
            _is_true("dob_matches_identity_number"),
            "The date of birth agrees with the date in the identity number.",
            R.DOB_MISMATCH,
        ),
        Check(
            "names_present",
            "ExpectColumnValuesToBeInSet",
            _is_true("names_present"),
            "Given name and family name are both present (not empty after trimming).",
            R.MISSING_NAME,
        ),
        Check(
            "name_length",
            "ExpectColumnValuesToBeBetween",
            {"column": "longest_name_length", "min_value": 0, "max_value": max_name_length},
            f"Given and family names have at most {max_name_length} characters (DCC fn/gn).",
            R.NAME_TOO_LONG,
        ),
        Check(
            "names_valid_characters",
            "ExpectColumnValuesToBeInSet",
            _is_true("names_valid_characters"),
            "Given and family names hold no control character (Unicode Cc: NUL, ESC, CR, "
            "LF ...) and no bidirectional override or isolate (U+202A-U+202E, U+2066-U+2069).",
            R.INVALID_CHARACTERS,
        ),
        Check(
            "consent_before_extraction",
            "ExpectColumnValuesToBeInSet",
            _is_true("consent_before_extraction"),
            "The order carries a consent time, and consent was given before the extraction.",
            R.CONSENT_MISSING,
        ),
        Check(
            "product_known",
            "ExpectColumnValuesToBeInSet",
            {"column": "product", "value_set": sorted(known_products)},
            "The vaccine reported to the NVR is a known COVID-19 vaccine (name or EU number).",
            R.UNKNOWN_PRODUCT,
        ),
        Check(
            "vaccination_not_in_future",
            "ExpectColumnValuesToBeInSet",
            _is_true("vaccination_not_in_future"),
            "The vaccination date is not after the run date.",
            R.FUTURE_VACCINATION_DATE,
        ),
        Check(
            "vaccination_after_campaign_start",
            "ExpectColumnValuesToBeInSet",
            _is_true("vaccination_after_campaign_start"),
            "The vaccination date is not before the start of the campaign "
            "(settings.campaign_start).",
            R.BEFORE_CAMPAIGN_START,
        ),
        Check(
            "vaccination_after_authorisation",
            "ExpectColumnValuesToBeInSet",
            _is_true("vaccination_after_authorisation"),
            "The vaccination date is not before the EU authorisation of its product.",
            R.BEFORE_AUTHORISATION,
        ),
        Check(
            "dose_number_in_range",
            "ExpectColumnValuesToBeBetween",
            {"column": "dose_number", "min_value": 1, "max_value": max_dose},
            f"The dose number is between 1 and {max_dose} (a missing dose number shows as -1; "
            "rows without a vaccination are blank).",
            R.DOSE_OUT_OF_RANGE,
        ),
        Check(
            "dose_consistent_with_history",
            "ExpectColumnValuesToBeInSet",
            _is_true("dose_consistent_with_history"),
            "Within a person's history (in date order) each dose number is higher than the "
            "previous one and falls on a later day.",
            R.DOSE_INCONSISTENT,
        ),
        Check(
            "event_not_duplicated",
            "ExpectColumnValuesToBeInSet",
            _is_true("event_not_duplicated"),
            "No vaccination event appears twice for an order (same event id, or same day "
            "and product).",
            R.DUPLICATE_EVENT,
        ),
    ]


def dcc_payload_checks(uvci_pattern: str) -> list[Check]:
    """Row-level checks of payloads.parquet (one row per order)."""
    return [
        Check(
            "payload_schema",
            "ExpectColumnValuesToBeInSet",
            _is_true("schema_ok"),
            "The payload validates against the DCC JSON schema of its `ver`, with formats.",
            R.SCHEMA_INVALID,
        ),
        Check(
            "payload_value_sets",
            "ExpectColumnValuesToBeInSet",
            _is_true("value_sets_ok"),
            "Every coded field is an *active* code of its EU value set.",
            R.VALUE_SET,
        ),
        Check(
            "transliterated_names",
            "ExpectColumnValuesToBeInSet",
            _is_true("transliterated_names_ok"),
            "fnt and gnt (when present) match ^[A-Z<]*$, at most 80 characters, "
            "at least one of them present.",
            R.SCHEMA_INVALID,
        ),
        Check(
            "uvci_format",
            "ExpectColumnValuesToMatchRegex",
            {"column": "uvci", "regex": uvci_pattern},
            "The UVCI has the form URN:UVCI:01:SE:<issuer>/<opaque>#<check>, at most 80 "
            "characters.",
            R.UVCI_INVALID,
        ),
        Check(
            "uvci_check_character",
            "ExpectColumnValuesToBeInSet",
            _is_true("uvci_check_ok"),
            "The UVCI's check character (Luhn mod N over A-Z0-9/:) is right and the UVCI "
            "is the one inside the payload.",
            R.UVCI_INVALID,
        ),
        Check(
            "uvci_unique_in_run",
            "ExpectColumnValuesToBeUnique",
            {"column": "uvci"},
            "No two payloads of the run carry the same UVCI.",
            R.UVCI_DUPLICATE,
        ),
        Check(
            "uvci_new_to_ledger",
            "ExpectColumnValuesToBeInSet",
            _is_true("uvci_not_in_ledger"),
            "The UVCI is not already held by a certificate of another order in the ledger.",
            R.UVCI_DUPLICATE,
        ),
    ]


def signed_batch_checks() -> list[Check]:
    """Row-level checks of a batch's signed.parquet."""
    return [
        Check(
            "certificate_verifies",
            "ExpectColumnValuesToBeInSet",
            _is_true("verifies"),
            "The HC1 decodes (Base45, zlib, COSE, CWT), its signature verifies with the DSC "
            "and its payload passes the schema.",
            R.SIGNATURE_INVALID,
        ),
        Check(
            "certificate_matches_plan",
            "ExpectColumnValuesToBeInSet",
            _is_true("matches_plan"),
            "The signed certificate carries the UVCI of the payload planned for its order "
            "(in the file and inside the signed payload).",
            R.SIGNATURE_INVALID,
        ),
    ]


# --- run gates: one-row frames of run facts ------------------------------------------------


def volume_gate(expected: int) -> Check:
    return Check(
        "volume_matches_orders",
        "ExpectColumnValuesToBeBetween",
        {"column": "orders_in_file", "min_value": expected, "max_value": expected},
        f"Every order claimed for the run is in the file ({expected}).",
    )


def quarantine_rate_gate(threshold: float) -> Check:
    return Check(
        "quarantine_rate",
        "ExpectColumnValuesToBeBetween",
        {"column": "quarantine_rate", "min_value": 0.0, "max_value": threshold},
        f"At most {threshold:.2%} of the orders are quarantined; more means something "
        "upstream is broken and the run stops (settings.quarantine_threshold).",
    )


def freshness_gate(max_age_hours: float) -> Check:
    return Check(
        "nvr_snapshot_fresh",
        "ExpectColumnValuesToBeBetween",
        {"column": "nvr_snapshot_age_hours", "min_value": 0.0, "max_value": max_age_hours},
        f"The NVR snapshot was at most {max_age_hours:g} hours old when extracted "
        "(settings.nvr_max_age_hours).",
    )


def batch_count_gate(planned: int) -> Check:
    return Check(
        "signed_count_matches_plan",
        "ExpectColumnValuesToBeBetween",
        {"column": "signed_matching_plan", "min_value": planned, "max_value": planned},
        f"The batch holds one signed certificate for each of the {planned} planned orders.",
    )


def no_unplanned_gate() -> Check:
    return Check(
        "no_unplanned_certificates",
        "ExpectColumnValuesToBeBetween",
        {"column": "unplanned_certificates", "min_value": 0, "max_value": 0},
        "The batch holds no certificate for an order that was not planned into it.",
    )


def all_verified_gate() -> Check:
    return Check(
        "every_certificate_verifies",
        "ExpectColumnValuesToBeBetween",
        {"column": "failed_certificates", "min_value": 0, "max_value": 0},
        "Every signed certificate of the batch verifies; one that does not stops the batch.",
    )
