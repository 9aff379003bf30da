"""One settings object for bevis, read from the environment (prefix ``BEVIS_``) at run time.

Defaults run on one laptop: SQLite files and local folders under ``BEVIS_DATA_DIR``, the
mailbox simulator on loopback, development keys. Never read settings at DAG parse time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from signing.keys import KeySource

DEV_PSEUDONYM_KEY = "bevis-development-pseudonym-key-not-for-production"
DEV_PKCS11_PIN = "1234"
# Secrets published with bevis (defaults here, placeholders in docker/.env.example): anyone
# holding one can recompute every pseudonym (or log in to the token). Refused outside
# development mode (BEVIS_DEV_MODE).
PUBLISHED_SECRETS = frozenset({DEV_PSEUDONYM_KEY, DEV_PKCS11_PIN, "change-me"})


_SECRET_FIELDS = (
    ("pseudonym_key", "BEVIS_PSEUDONYM_KEY"),
    ("uvci_key", "BEVIS_UVCI_KEY"),
    ("pkcs11_pin", "BEVIS_PKCS11_PIN"),
)


class DefaultSecretError(RuntimeError):
    """A secret is still the published development default outside development mode.
    (Defined here, not in jobs.errors: the floor's modules are independent; the message
    names the variable, never the value.)"""


def published_secret_message(variable: str) -> str:
    return (
        f"{variable} is a published development secret; set a real one "
        "(BEVIS_DEV_MODE=1 allows it for the demo and tests only)"
    )


class _PublishedSecret(SecretStr):
    """A secret left at a published value outside development mode: using it refuses."""

    def __init__(self, value: str, variable: str) -> None:
        super().__init__(value)
        self.variable = variable

    def get_secret_value(self) -> str:
        raise DefaultSecretError(published_secret_message(self.variable))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and self._secret_value == other._secret_value

    def __hash__(self) -> int:
        return hash(self._secret_value)


class Settings(BaseSettings):
    """Every knob of bevis. Environment variable = ``BEVIS_`` + field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="BEVIS_", extra="ignore")

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Root folder for runs, keys and SQLite files.")
    source_url: str | None = Field(None, description="NVR/orders/population database URL.")
    ledger_url: str | None = Field(None, description="Issuance ledger database URL.")
    reporting_url: str | None = Field(None, description="Reporting tables URL (default: ledger).")
    airflow_home: Path | None = Field(None, description="AIRFLOW_HOME for bevis-managed runs.")

    # --- identity and pseudonyms --------------------------------------------------------
    pseudonym_key: SecretStr = Field(
        SecretStr(DEV_PSEUDONYM_KEY), description="HMAC key for pseudonymous person ids."
    )

    # --- issuer and validity ------------------------------------------------------------
    issuer_country: str = "SE"
    issuer_name: str = "Swedish eHealth Agency"
    uvci_issuer: str = Field("EHM", description="Issuer segment of the UVCI.")
    uvci_key: SecretStr | None = Field(
        None,
        description="Secret for the UVCI opaque part (default: pseudonym_key); a UVCI key is derived from it. "
        "Never change it for an existing ledger: UVCIs must be stable across reruns.",
    )
    validity_days: int = Field(365, ge=1, description="exp - iat, capped at the DSC's notAfter.")
    campaign_start: str = Field("2020-12-27", description="First day of vaccination in the NVR.")

    # --- keys ---------------------------------------------------------------------------
    key_provider: Literal["file", "pkcs11"] = "file"
    key_dir: Path | None = Field(None, description="Folder with dsc.pem, dsc.key, csca.pem.")
    key_passphrase: SecretStr | None = None
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token_label: str = "bevis"
    pkcs11_pin: SecretStr = SecretStr(DEV_PKCS11_PIN)
    pkcs11_key_label: str = "dsc"

    # --- batches and parallelism --------------------------------------------------------
    batch_size: int = Field(5000, ge=1)
    max_batches: int = Field(1024, ge=1, description="Airflow's default max_map_length.")
    workers: int | None = Field(None, description="Processes per worker (default: all cores).")
    # leases of running batch steps (jobs/ledger/leases.py): a heartbeat renews the lease
    # every lease_seconds/3; a rerun takes over a step only once its lease has expired
    lease_seconds: float = Field(
        30.0, gt=0, description="How long a batch step's lease lasts without a heartbeat."
    )

    # --- Airflow REST API (reruns through the scheduler) -------------------------------
    airflow_api_url: str = Field("http://127.0.0.1:8080", description="Airflow 3 API server.")
    airflow_username: str | None = Field(None, description="User for POST /auth/token (JWT).")
    airflow_password: SecretStr | None = None
    airflow_dag_id: str = Field("dcc_issuance", description="The issuance DAG's id.")

    # --- data quality -------------------------------------------------------------------
    quarantine_threshold: float = Field(0.02, ge=0, le=1)
    nvr_max_age_hours: float = Field(48.0, description="Freshness bound of the NVR snapshot.")

    # --- delivery -----------------------------------------------------------------------
    mailbox_url: str = "http://127.0.0.1:8787"
    mailbox_concurrency: int = 32
    mailbox_timeout_s: float = 10.0
    mailbox_max_attempts: int = 5
    service_windows: list[str] = Field(
        default_factory=list,
        description="ISO intervals 'start/end' in which mailbox delivery is deferred.",
    )
    paper_policy: Literal["paper", "defer"] = "paper"
    mailbox_sender: str = Field("SE2021006255", description="Sender id known to FaR.")
    mailbox_backoff_s: float = Field(0.2, ge=0, description="First retry delay (doubles).")
    mailbox_backoff_max_s: float = Field(10.0, ge=0, description="Cap of a retry delay.")
    mailbox_breaker_threshold: int = Field(20, ge=1, description="Failures that open it.")
    mailbox_breaker_cooldown_s: float = Field(5.0, ge=0, description="Open → half-open.")
    mailbox_lookup_chunk: int = Field(1000, ge=1, le=1000, description="Recipients per look-up.")
    # operator endpoints, TLS and the processing window (issue 14: exactly once, authenticated)
    mailbox_operators: dict[str, str] = Field(
        default_factory=dict,
        description="Operator name → base URL of its service (deliverSecure, messages). A "
        "look-up answer naming another operator, or another scheme/host/port, is refused "
        "(deferred 'operator_unknown'). Empty: the simulator's operators under a loopback "
        "mailbox_url.",
    )
    mailbox_ca_bundle: Path | None = Field(
        None, description="CA bundle (PEM) verifying FaR and the operators (default: system)."
    )
    mailbox_client_cert: Path | None = Field(None, description="Client certificate (mTLS, PEM).")
    mailbox_client_key: Path | None = Field(
        None, description="Its key (default: in the cert file)."
    )
    mailbox_token: SecretStr | None = Field(None, description="Bearer token for FaR and operators.")
    mailbox_token_file: Path | None = Field(None, description="File with the bearer token.")
    mailbox_plain_http_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts besides loopback that plain http:// may reach (a simulator on a "
        "private container network); never a real operator.",
    )
    mailbox_processing_window_s: float = Field(
        30.0,
        ge=0,
        description="How long an operator may take to store a message: a status 404 counts "
        "as 'not there' only this long after the last request that may have reached it.",
    )

    # --- mailbox simulator (bevis simulator mailbox) -------------------------------------
    simulator_secure_share: float = Field(
        0.73, ge=0, le=1, description="Share of recipients with a secure mailbox (per hash)."
    )
    simulator_latency_ms: float = Field(0.0, ge=0, description="Added to every answer.")
    simulator_error_rate: float = Field(0.0, ge=0, le=1, description="Deliveries answered 500.")
    simulator_ack_loss_rate: float = Field(
        0.0, ge=0, le=1, description="First deliveries stored but answered 503 (lost ack)."
    )
    simulator_outages: list[str] = Field(
        default_factory=list, description="ISO intervals 'start/end' answered 503."
    )
    simulator_outage_after: int | None = Field(
        None, description="Drill: after this many stored messages, an outage begins..."
    )
    simulator_outage_requests: int = Field(0, ge=0, description="...of this many requests.")
    simulator_outage_scope: Literal["all", "operators", "far", "status"] = Field(
        "all",
        description="Which endpoints an outage hits ('status': only the operators' status "
        "call, which the other scopes leave answering).",
    )
    simulator_retry_after_s: float = Field(1.0, ge=0, description="Retry-After of a 503.")
    simulator_db: Path | None = Field(None, description="Default <data_dir>/mailbox-sim.db.")
    simulator_processing_ms: float = Field(
        0.0, ge=0, description="deliverSecure only: time to process a received message."
    )
    simulator_tls_cert: Path | None = Field(None, description="Serve HTTPS with this cert (PEM).")
    simulator_tls_key: Path | None = Field(None, description="Its key (PEM).")
    simulator_client_ca: Path | None = Field(
        None, description="Require client certificates signed by this CA (mutual TLS)."
    )
    simulator_token: SecretStr | None = Field(None, description="Require this bearer token.")
    simulator_operator_base_url: str | None = Field(
        None, description="Where FaR's service addresses point (default: the simulator itself)."
    )

    # --- EU gateway: revocation batches (jobs/gateway; bevis revocation ...) -------------
    gateway_url: str | None = Field(None, description="The EU gateway (DCCG) base URL.")
    gateway_ca_bundle: Path | None = Field(
        None, description="CA bundle (PEM) verifying the gateway (default: system)."
    )
    gateway_client_cert: Path | None = Field(
        None, description="TLS authentication certificate (default <key dir>/gateway/auth.pem)."
    )
    gateway_client_key: Path | None = Field(None, description="Its key (default: auth.key).")
    gateway_upload_cert: Path | None = Field(
        None, description="Upload certificate for CMS packages (default <key dir>/gateway)."
    )
    gateway_upload_key: Path | None = Field(None, description="Its key (default: upload.key).")
    gateway_trust_anchor: Path | None = Field(
        None, description="The gateway's trust anchor (PEM), pinned: checks the trust list."
    )
    gateway_timeout_s: float = Field(30.0, gt=0, description="Per request to the gateway.")
    gateway_sim_db: Path | None = Field(None, description="Default <data_dir>/gateway-sim.db.")

    # --- reporting ----------------------------------------------------------------------
    small_count_threshold: int = Field(5, ge=1)

    # --- drills -------------------------------------------------------------------------
    fault: str | None = Field(None, description="'<step>:<batch sequence>' crashes that step once.")

    # --- development mode and input limits ----------------------------------------------
    dev_mode: bool = Field(
        False,
        description="Development mode (demo, benches, simulator, tests): the published "
        "development secrets are allowed. Never in production.",
    )
    max_line_bytes: int = Field(
        64 * 1024, ge=1, description="bevis sign/verify: a longer input line is refused unread."
    )

    @model_validator(mode="after")
    def _refuse_published_secrets(self) -> Settings:
        """Outside development mode a secret at a published value cannot be used: reading
        it raises :class:`DefaultSecretError` (``bevis doctor`` reports it as a failure)."""
        for field, variable in _SECRET_FIELDS:
            value = getattr(self, field)
            if value is None or value._secret_value not in PUBLISHED_SECRETS:
                continue
            guarded = isinstance(value, _PublishedSecret)
            if self.dev_mode and guarded:
                setattr(self, field, SecretStr(value._secret_value))
            elif not self.dev_mode and not guarded:
                setattr(self, field, _PublishedSecret(value._secret_value, variable))
        return self

    def published_secrets(self) -> list[str]:
        """The variables whose secret this configuration would use at a published value
        (the UVCI key falls back to the pseudonym key; the PIN counts with PKCS#11 only)."""
        out = []
        for field, variable in _SECRET_FIELDS:
            value = getattr(self, field)
            if field == "uvci_key" and value is None:
                continue  # derived from the pseudonym key, which is reported itself
            if field == "pkcs11_pin" and self.key_provider != "pkcs11":
                continue
            if value is not None and value._secret_value in PUBLISHED_SECRETS:
                out.append(variable)
        return out

    def refuse_published_secrets(self, *variables: str) -> None:
        """Raise :class:`DefaultSecretError` naming the first of ``variables`` (default:
        all) that is at a published value, unless in development mode."""
        if self.dev_mode:
            return
        for variable in self.published_secrets():
            if not variables or variable in variables:
                raise DefaultSecretError(published_secret_message(variable))

    # --- derived ------------------------------------------------------------------------
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    def resolved_source_url(self) -> str:
        return self.source_url or f"sqlite:///{self.resolved_data_dir() / 'nvr.db'}"

    def resolved_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{self.resolved_data_dir() / 'ledger.db'}"

    def resolved_reporting_url(self) -> str:
        return self.reporting_url or self.resolved_ledger_url()

    def resolved_key_dir(self) -> Path:
        return (self.key_dir or self.resolved_data_dir() / "keys").expanduser().resolve()

    def resolved_workers(self) -> int:
        return self.workers or max(1, len(os.sched_getaffinity(0)))

    def key_source(self) -> KeySource:
        """The signing key source these settings configure (signing knows no settings)."""
        from signing.keys import KeySource

        return KeySource(
            provider=self.key_provider,
            key_dir=self.resolved_key_dir(),
            passphrase=self.key_passphrase.get_secret_value() if self.key_passphrase else None,
            pkcs11_module=self.pkcs11_module,
            token_label=self.pkcs11_token_label,
            pin=self.pkcs11_pin.get_secret_value() if self.key_provider == "pkcs11" else "",
            key_label=self.pkcs11_key_label,
        )


def get_settings(**overrides: object) -> Settings:
    """Fresh settings from the environment; cheap, so read them where they are used."""
    return Settings(**overrides)  # type: ignore[arg-type]
