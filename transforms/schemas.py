"""The typed Parquet contracts between the steps of a run (explicit pyarrow schemas).

extract.parquet   — one row per (order, NVR vaccination event); an order with no event has
                    one row with null event columns, so that it can be quarantined.
payloads.parquet  — one row per order that is ready to sign: the DCC JSON plus the columns
                    the ledger, reporting and delivery need.
signed.parquet    — one row per signed certificate of a batch.
quarantine        — one row per held-back record, with the reason; pid and order id only.

Identity data (person_id, names, dob, address) live only in the columns that the DCC and
the mailbox need, and never in file names, logs or reports.
"""

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

EXTRACT = pa.schema(
    [
        ("order_id", pa.string()),
        ("pid", pa.string()),  # pseudonymous person id (keyed hash of person_id)
        ("person_id", pa.string()),  # personnummer/samordningsnummer: for mailbox routing
        ("requested_at", TS),
        ("consent_at", TS),
        ("cert_type", pa.string()),  # v | t | r
        ("given_name", pa.string()),
        ("family_name", pa.string()),
        ("dob", pa.string()),  # YYYY-MM-DD, or YYYY-MM / YYYY when the register has only that
        ("protected_identity", pa.bool_()),
        ("address_street", pa.string()),
        ("address_postcode", pa.string()),
        ("address_city", pa.string()),
        ("event_id", pa.string()),  # NVR reporting system + unique reference
        ("vaccination_date", pa.date32()),
        ("vaccine", pa.string()),  # product name or NPL-id as reported to the NVR
        ("batch_number", pa.string()),
        ("dose_number", pa.int16()),
        ("care_provider_org", pa.string()),
        ("county_code", pa.string()),
        ("municipality_code", pa.string()),
        ("reported_at", TS),
    ]
)

PAYLOADS = pa.schema(
    [
        ("order_id", pa.string()),
        ("pid", pa.string()),
        ("uvci", pa.string()),
        ("cert_type", pa.string()),
        ("payload_json", pa.string()),  # the DCC payload (schema JSON), UTF-8
        ("person_id", pa.string()),  # mailbox recipient
        ("protected_identity", pa.bool_()),
        ("address_street", pa.string()),
        ("address_postcode", pa.string()),
        ("address_city", pa.string()),
        ("county", pa.string()),
        ("age_band", pa.string()),
        ("product", pa.string()),  # mp
        ("dn", pa.int16()),
        ("sd", pa.int16()),
        ("vaccination_date", pa.date32()),
    ]
)

SIGNED = pa.schema(
    [
        ("order_id", pa.string()),
        ("uvci", pa.string()),
        ("kid", pa.string()),  # base64
        ("iat", pa.int64()),
        ("exp", pa.int64()),
        ("hc1", pa.string()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.string()),
        ("suite", pa.string()),
        ("expectation", pa.string()),
        ("reason_code", pa.string()),
        ("pid", pa.string()),
        ("order_id", pa.string()),
        ("event_id", pa.string()),
        ("detail", pa.string()),
    ]
)
