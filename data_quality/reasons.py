"""Quarantine reason codes. The first group are the generator's defect kinds (the SAME
strings, see /work/notes/CONTRACTS.md); the others are the checks that have no injected
defect behind them (defence in depth)."""

from __future__ import annotations

# --- the generator's defect kinds -----------------------------------------------------------
INVALID_CHECK_DIGIT = "invalid_check_digit"
FUTURE_VACCINATION_DATE = "future_vaccination_date"
BEFORE_AUTHORISATION = "before_authorisation"
UNKNOWN_PRODUCT = "unknown_product"
DOSE_OUT_OF_RANGE = "dose_out_of_range"
DUPLICATE_EVENT = "duplicate_event"
MISSING_NAME = "missing_name"
DOB_MISMATCH = "dob_mismatch"
NAME_TOO_LONG = "name_too_long"

# --- other agreed codes ---------------------------------------------------------------------
NO_VACCINATION = "no_vaccination"
SCHEMA_INVALID = "schema_invalid"
VALUE_SET = "value_set"
UVCI_DUPLICATE = "uvci_duplicate"
SIGNATURE_INVALID = "signature_invalid"

# --- added by data quality (documented in docs/decisions/data-quality.md) ------------------
INVALID_IDENTITY_NUMBER = "invalid_identity_number"  # not 12 digits / no real date in it
DOB_IMPLAUSIBLE = "dob_implausible"  # unparseable, before 1890, after the run date
BEFORE_CAMPAIGN_START = "before_campaign_start"  # vaccination before settings.campaign_start
DOSE_INCONSISTENT = "dose_inconsistent"  # dose numbers do not rise with the dates
CONSENT_MISSING = "consent_missing"  # no consent time, or consent after the extraction
UVCI_INVALID = "uvci_invalid"  # format or check character wrong, or not the payload's ci
INVALID_CHARACTERS = "invalid_characters"  # a name holds a control or bidi-override character

# --- consent after the extract (jobs/sources/consent.py, jobs/steps/scrub.py) ---------------
CONSENT_WITHDRAWN = "consent_withdrawn"  # consent lapsed between the extract and sign/deliver
INVALID_CONSENT_TIME = "invalid_consent_time"  # an order's instant is not in the stored form

# The defect kinds the synthetic register injects, in the order the generator draws them
# (part of its determinism): the generator and the DQ test data import this one tuple.
GENERATOR_DEFECT_KINDS = (
    INVALID_CHECK_DIGIT,
    FUTURE_VACCINATION_DATE,
    BEFORE_AUTHORISATION,
    UNKNOWN_PRODUCT,
    DOSE_OUT_OF_RANGE,
    DUPLICATE_EVENT,
    MISSING_NAME,
    DOB_MISMATCH,
    NAME_TOO_LONG,
)
