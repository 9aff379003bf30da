"""The EU gateway's HTTP client: mutual TLS with the country's TLS authentication
certificate, the gateway's CA bundle, and its revocation-list endpoints.

A 4xx answer is :class:`jobs.errors.GatewayRefused` carrying the gateway's problem report
(code, problem, details); 5xx and transport errors are :class:`GatewayUnavailable`
(retryable). Texts never carry certificate contents, only batch ids and the problem.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from jobs.errors import ConfigurationInvalid, GatewayRefused, GatewayUnavailable
from jobs.settings import Settings, get_settings

CMS = "application/cms"
FIRST_LIST_DATE = "2021-06-01T00:00:00Z"  # the gateway's advice for the first list call


@dataclass(frozen=True)
class BatchListItem:
    batch_id: str
    country: str
    date: dt.datetime
    deleted: bool


class GatewayError(GatewayRefused):
    """A refusal with the gateway's problem report."""

    def __init__(self, status: int, problem: dict[str, Any] | None, what: str) -> None:
        self.status = status
        self.problem = problem if isinstance(problem, dict) else {}
        code = self.problem.get("code", "")
        text = self.problem.get("problem", "")
        details = self.problem.get("details", "")
        super().__init__(
            f"{what}: the gateway answered {status}"
            + (f" {code} {text!r}" if code or text else "")
            + (f" ({details})" if details else "")
        )


def tls_context(
    ca_bundle: Path | None,
    client_cert: Path,
    client_key: Path | None = None,
    passphrase: str | None = None,
) -> ssl.SSLContext:
    """Verify the gateway (the CA bundle, or the system's), present the client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    for p in (client_cert, client_key):
        if p is not None and not Path(p).is_file():
            raise ConfigurationInvalid(
                f"{p} not found: the gateway's TLS authentication certificate and key "
                "(BEVIS_GATEWAY_CLIENT_CERT/_KEY; 'bevis keys init-dev' makes development ones)"
            )
    ctx.load_cert_chain(
        str(client_cert), str(client_key) if client_key else None, password=passphrase
    )
    return ctx


class GatewayClient:
    """The revocation-list endpoints of one gateway."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_bundle: Path | None,
        client_cert: Path,
        client_key: Path | None = None,
        passphrase: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not base_url.startswith("https://"):
            raise ConfigurationInvalid(
                f"gateway URL {base_url!r}: the gateway is reached over mutual TLS (https://)"
            )
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=tls_context(ca_bundle, client_cert, client_key, passphrase),
            timeout=timeout,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, url: str | None = None
    ) -> GatewayClient:
        from signing.keys import AUTH_FILE, AUTH_KEY_FILE, GATEWAY_DIR

        s = settings or get_settings()
        base = url or s.gateway_url
        if not base:
            raise ConfigurationInvalid("no gateway: pass --gateway URL or set BEVIS_GATEWAY_URL")
        folder = s.resolved_key_dir() / GATEWAY_DIR
        cert = s.gateway_client_cert or folder / AUTH_FILE
        key = s.gateway_client_key or (
            folder / AUTH_KEY_FILE if not s.gateway_client_cert else None
        )
        return cls(
            base,
            ca_bundle=s.gateway_ca_bundle,
            client_cert=cert,
            client_key=key,
            passphrase=s.key_passphrase.get_secret_value() if s.key_passphrase else None,
            timeout=s.gateway_timeout_s,
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(
                f"{what}: the gateway at {self.base_url} cannot be reached ({type(exc).__name__})"
            ) from exc
        if response.status_code >= 500:
            raise GatewayUnavailable(f"{what}: the gateway answered {response.status_code}")
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = None
            raise GatewayError(
                response.status_code, problem if isinstance(problem, dict) else None, what
            )
        return response

    def upload(self, cms_b64: str) -> str:
        """POST a signed batch; the gateway's new batch id (its ETag)."""
        r = self._request(
            "upload", "POST", "/revocation-list", content=cms_b64, headers={"Content-Type": CMS}
        )
        batch_id = (r.headers.get("etag") or "").strip('"')
        if r.status_code != 201 or not batch_id:
            raise GatewayUnavailable(f"upload: answer {r.status_code} without a batch id (ETag)")
        return batch_id

    def delete(self, cms_b64: str, batch_id: str) -> None:
        """DELETE a batch (the signed ``{"batchId": …}``), via the POST alias."""
        self._request(
            f"delete {batch_id}",
            "POST",
            "/revocation-list/delete",
            content=cms_b64,
            headers={"Content-Type": CMS},
        )

    def batch_list(self, since: dt.datetime | str = FIRST_LIST_DATE) -> Iterator[BatchListItem]:
        """Every batch changed after ``since``, all pages (the gateway gives 1000 a call and
        ``more``); deleted ones included, flagged."""
        after = since if isinstance(since, str) else since.isoformat()
        while True:
            r = self._request(
                "list",
                "GET",
                "/revocation-list",
                headers={"If-Modified-Since": after, "Accept": "application/json"},
            )
            if r.status_code == 204:
                return
            body = r.json()
            items = [
                BatchListItem(
                    b["batchId"], b["country"], dt.datetime.fromisoformat(b["date"]), b["deleted"]
                )
                for b in body.get("batches", [])
            ]
            yield from items
            if not body.get("more") or not items:
                return
            after = items[-1].date.isoformat()

    def download(self, batch_id: str) -> str:
        """The batch's CMS (base64 text), exactly as it was uploaded."""
        r = self._request(
            f"download {batch_id}",
            "GET",
            f"/revocation-list/{batch_id}",
            headers={"Accept": CMS},
        )
        return r.text

    # --- signer certificates and the trust list -----------------------------------------------

    def upload_dsc(self, cms_b64: str) -> None:
        """POST a DSC (CMS over its DER, signed with the upload certificate)."""
        self._request(
            "upload DSC",
            "POST",
            "/signerCertificate",
            content=cms_b64,
            headers={"Content-Type": CMS},
        )

    def delete_dsc(self, cms_b64: str) -> None:
        """Revoke a DSC at the gateway (the same kind of CMS as its upload)."""
        self._request(
            "delete DSC",
            "POST",
            "/signerCertificate/delete",
            content=cms_b64,
            headers={"Content-Type": CMS},
        )

    def trust_list(
        self, kind: str | None = None, country: str | None = None
    ) -> list[dict[str, Any]]:
        """The gateway's trust list (all entries, or of one type, or of one type and country)."""
        path = (
            "/trustList"
            + (f"/{kind}" if kind else "")
            + (f"/{country}" if kind and country else "")
        )
        body = self._request(
            "trust list", "GET", path, headers={"Accept": "application/json"}
        ).json()
        if not isinstance(body, list):
            raise GatewayUnavailable("trust list: the answer is not a list")
        return body
