"""The mailbox interface as JSON over HTTP (httpx): pooled keep-alive connections, one
circuit breaker per service (FaR and each operator), failures classified for the retry
policy of the delivery step.

The channel is authenticated: HTTPS verified against ``mailbox_ca_bundle`` (or the system's
trust store), a client certificate for mutual TLS (``mailbox_client_cert``/``_key``) and a
bearer token (``mailbox_token`` or ``mailbox_token_file``) on every request. Plain http:// is
refused at construction unless the host is loopback (the simulator). Messages go only to the
configured operator endpoints (:mod:`jobs.mailbox.endpoints`), never to an address a
look-up answer names.

Wire format (served by ``jobs.mailbox.simulator``):
  POST {far}/far/isReachable       {"sender", "recipients": [..≤1000]}
       → {"results": [{"recipient", "status", "pending", "senderAccepted",
                       "operator", "serviceAddress"}]}
  POST {operator}/deliverSecure    Idempotency-Key header; {"sender", "recipient",
       "subject", "body", "attachments": [{"filename", "contentType", "content" (base64),
       "checksum": {"algorithm": "SHA-256", "value"}}]} → {"transactionId", "duplicate"}
  GET  {operator}/messages/{key}   → 200 receipt | 404
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from jobs.errors import ConfigurationInvalid
from jobs.mailbox.adapter import (
    MAX_RECIPIENTS_PER_LOOKUP,
    AuthenticationFailed,
    CircuitOpenError,
    OperatorUnknown,
    PermanentError,
    Reachability,
    Reachable,
    Receipt,
    SecureMessage,
    TransientError,
)
from jobs.mailbox.breaker import CircuitBreaker
from jobs.mailbox.endpoints import OperatorEndpoints, check_url, is_loopback, origin

POOL_CONNECTIONS = 8


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# Words of OpenSSL's reasons that say a handshake failed over certificates (ours or theirs).
_TLS_REFUSALS = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "ACCESS_DENIED")


def tls_refusal(exc: BaseException) -> str | None:
    """What went wrong when a transport error is a TLS certificate problem (the server's
    failed our verification, or it refused our client certificate); None otherwise."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS: the server's certificate failed verification ({e.verify_message})"
        if isinstance(e, ssl.SSLError):
            reason = str(e.reason or e)
            if any(word in reason.upper() for word in _TLS_REFUSALS):
                return f"TLS: {reason}"
        e = e.__cause__ or e.__context__
    return None


def tls_context(
    ca_bundle: Path | None = None, client_cert: Path | None = None, client_key: Path | None = None
) -> ssl.SSLContext | bool:
    """Verification against ``ca_bundle`` (default: certifi's bundle, as httpx does) and
    our client certificate for mutual TLS; ``True`` (httpx's default) when neither is set."""
    if ca_bundle is None and client_cert is None:
        if client_key is not None:
            raise ConfigurationInvalid("mailbox_client_key is set without mailbox_client_cert")
        return True
    try:
        if ca_bundle is None:
            import certifi

            ca_bundle = Path(certifi.where())
        ctx = ssl.create_default_context(cafile=str(ca_bundle))
        if client_cert is not None:
            ctx.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationInvalid(
            f"mailbox TLS material unusable (CA {ca_bundle}, client certificate "
            f"{client_cert}): {type(exc).__name__}: {exc}"
        ) from exc
    return ctx


def bearer_token(token: str | None = None, token_file: Path | None = None) -> str | None:
    """The bearer token from the settings or from a file (one of the two)."""
    if token is not None and token_file is not None:
        raise ConfigurationInvalid("set mailbox_token or mailbox_token_file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationInvalid(f"mailbox_token_file {token_file}: {exc}") from exc
        if not token:
            raise ConfigurationInvalid(f"mailbox_token_file {token_file} is empty")
    return token


def _endpoints(
    far_url: str, operators: OperatorEndpoints | None, hosts: tuple[str, ...]
) -> tuple[str, OperatorEndpoints]:
    """The checked FaR URL and operator endpoints (the simulator's under a loopback FaR
    when none are configured)."""
    far_url = check_url(far_url, "mailbox_url (the reachability look-up)", hosts)
    if operators is None:
        far = origin(far_url)
        if far is None or not (is_loopback(far[1]) or far[1] in {h.lower() for h in hosts}):
            raise ConfigurationInvalid(
                "mailbox_operators is empty: configure each operator's base URL (name → "
                "https URL); only a simulator on loopback has its operators by default"
            )
        return far_url, OperatorEndpoints.of_simulator(far_url)
    for name, url in operators.urls.items():
        check_url(url, f"mailbox operator {name!r}", hosts)
    return far_url, operators


class HttpMailbox:
    """JSON-over-HTTP implementation of :class:`jobs.mailbox.adapter.MailboxAdapter`.

    ``operators``: the configured endpoints; by default, for a FaR on loopback (or on one
    of ``plain_http_hosts``: a simulator), the simulator's operators under it. ``verify``:
    what :func:`tls_context` returns; ``token``: sent as ``Authorization: Bearer``."""

    def __init__(
        self,
        far_url: str,
        *,
        sender: str,
        concurrency: int = 32,
        timeout_s: float = 10.0,
        breaker_threshold: int = 20,
        breaker_cooldown_s: float = 5.0,
        operators: OperatorEndpoints | None = None,
        verify: ssl.SSLContext | bool = True,
        token: str | None = None,
        plain_http_hosts: Iterable[str] = (),
    ) -> None:
        hosts = tuple(plain_http_hosts)
        self.far_url, self.operators = _endpoints(far_url, operators, hosts)
        self.sender = sender
        headers = {"User-Agent": "bevis-mailbox/1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # httpcore scans every connection of a pool for each request (idle/expired checks),
        # so CPU per request grows with the pool: several pools of ≤ 8 connections, used
        # round-robin, give the same concurrency for about half the CPU at 32.
        per_pool = min(concurrency, POOL_CONNECTIONS)
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(timeout_s),
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
                headers=headers,
                verify=verify,
                follow_redirects=False,  # a redirect could lead anywhere: never followed
            )
            for _ in range(-(-concurrency // per_pool))
        ]
        # Each request holds a slot of one pool, so httpcore never queues: its pool scans
        # every waiting request against every connection whenever one frees up, which
        # cost more CPU than the request itself (measured: docs/decisions).
        self._per_pool = per_pool
        self._slots: asyncio.Queue[int] | None = None
        self._breaker_args = (breaker_threshold, breaker_cooldown_s)
        self.breakers: dict[str, CircuitBreaker] = {}

    @staticmethod
    def configuration(settings) -> dict:
        """The client's arguments from the settings, checked: ConfigurationInvalid before
        any request when they are unsafe (plain http to a host that is not loopback, no
        operators for a real look-up service, unusable TLS files or token)."""
        hosts = tuple(settings.mailbox_plain_http_hosts)
        token = settings.mailbox_token.get_secret_value() if settings.mailbox_token else None
        operators = (
            OperatorEndpoints.configured(settings.mailbox_operators, hosts)
            if settings.mailbox_operators
            else None
        )
        args = {
            "far_url": settings.mailbox_url,
            "sender": settings.mailbox_sender,
            "concurrency": settings.mailbox_concurrency,
            "timeout_s": settings.mailbox_timeout_s,
            "breaker_threshold": settings.mailbox_breaker_threshold,
            "breaker_cooldown_s": settings.mailbox_breaker_cooldown_s,
            "operators": operators,
            "verify": tls_context(
                settings.mailbox_ca_bundle,
                settings.mailbox_client_cert,
                settings.mailbox_client_key,
            ),
            "token": bearer_token(token, settings.mailbox_token_file),
            "plain_http_hosts": hosts,
        }
        _endpoints(args["far_url"], operators, hosts)
        return args

    @classmethod
    def from_settings(cls, settings) -> HttpMailbox:
        """The client the settings configure (checked: :meth:`configuration`)."""
        args = HttpMailbox.configuration(settings)
        return cls(args.pop("far_url"), **args)

    def operator_endpoint(self, operator: str | None, service_address: str | None) -> str | None:
        return self.operators.resolve(operator, service_address)

    def breaker(self, service: str) -> CircuitBreaker:
        b = self.breakers.get(service)
        if b is None:
            b = self.breakers[service] = CircuitBreaker(service, *self._breaker_args)
        return b

    async def _call(
        self,
        service: str,
        method: str,
        url: str,
        before_send: Callable[[], Awaitable[None]] | None = None,
        **kwargs,
    ) -> tuple[httpx.Response, float]:
        """One request through the service's breaker; 5xx/429/network → TransientError,
        401/403 and TLS certificate failures → AuthenticationFailed, other 4xx →
        PermanentError (404 is returned to the caller). ``before_send`` is awaited after
        the breaker let the call through, right before the request leaves."""
        breaker = self.breaker(service)
        if self._slots is None:  # created inside the running event loop
            self._slots = asyncio.Queue()
            for _ in range(self._per_pool):
                for k in range(len(self._clients)):
                    self._slots.put_nowait(k)
        slot = await self._slots.get()
        try:
            # after the slot: a half-open trial is only taken by a call that goes out now
            breaker.before_call()
            if before_send is not None:
                await before_send()
            t0 = time.perf_counter()
            resp = await self._clients[slot].request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if (tls := tls_refusal(exc)) is not None:
                breaker.abandon()
                raise AuthenticationFailed(f"{service}: {tls}") from exc
            breaker.failure()
            raise TransientError(f"{service}: {type(exc).__name__}", ambiguous=False) from exc
        except httpx.TransportError as exc:  # read timeouts, resets: it may have arrived
            if (tls := tls_refusal(exc)) is not None:  # TLS 1.3: our certificate refused
                breaker.abandon()
                raise AuthenticationFailed(f"{service}: {tls}") from exc
            breaker.failure()
            raise TransientError(f"{service}: {type(exc).__name__}") from exc
        except CircuitOpenError:
            raise
        except BaseException:  # anything else (cancelled, undecodable): not the trial's verdict
            breaker.abandon()
            raise
        finally:
            self._slots.put_nowait(slot)
        latency = (time.perf_counter() - t0) * 1000
        if resp.status_code >= 500 or resp.status_code == 429:
            breaker.failure()
            raise TransientError(
                f"{service}: HTTP {resp.status_code}",
                http_status=resp.status_code,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                ambiguous=resp.status_code not in (429, 503),
            )
        breaker.success()
        if resp.status_code in (401, 403):
            raise AuthenticationFailed(
                f"{service}: HTTP {resp.status_code} (credentials refused)", resp.status_code
            )
        if resp.status_code >= 400 and resp.status_code != 404:
            detail = resp.text[:120].replace("\n", " ")
            raise PermanentError(f"{service}: HTTP {resp.status_code} {detail}", resp.status_code)
        if 300 <= resp.status_code < 400:
            raise PermanentError(
                f"{service}: HTTP {resp.status_code} (redirect not followed)", resp.status_code
            )
        return resp, latency

    def _operator_url(self, service_address: str, path: str) -> str:
        """``service_address`` + ``path`` when the address is a configured endpoint;
        OperatorUnknown (nothing sent) otherwise."""
        url = f"{service_address.rstrip('/')}{path}"
        if not self.operators.allows(url):
            raise OperatorUnknown(f"{origin(service_address)} is not a configured operator")
        return url

    async def lookup(self, recipients: Sequence[str]) -> dict[str, Reachability]:
        if len(recipients) > MAX_RECIPIENTS_PER_LOOKUP:
            raise ValueError(f"{len(recipients)} recipients > {MAX_RECIPIENTS_PER_LOOKUP}")
        resp, _ = await self._call(
            "far",
            "POST",
            f"{self.far_url}/far/isReachable",
            json={"sender": self.sender, "recipients": list(recipients)},
        )
        out = {}
        for r in resp.json()["results"]:
            out[r["recipient"]] = Reachability(
                recipient=r["recipient"],
                status=Reachable(r["status"]),
                pending=bool(r.get("pending")),
                sender_accepted=bool(r.get("senderAccepted", True)),
                operator=r.get("operator"),
                service_address=r.get("serviceAddress"),
            )
        return out

    async def deliver(
        self,
        service_address: str,
        message: SecureMessage,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Receipt:
        url = self._operator_url(service_address, "/deliverSecure")
        body = {
            "sender": self.sender,
            "recipient": message.recipient,
            "subject": message.subject,
            "body": message.body,
            "attachments": [
                {
                    "filename": message.filename,
                    "contentType": message.content_type,
                    "content": base64.b64encode(message.attachment).decode("ascii"),
                    "checksum": {"algorithm": "SHA-256", "value": message.checksum},
                }
            ],
        }
        resp, latency = await self._call(
            service_address,
            "POST",
            url,
            before_send,
            json=body,
            headers={"Idempotency-Key": message.idempotency_key},
        )
        if resp.status_code == 404:
            raise PermanentError(f"{service_address}: HTTP 404 (no such operator)", 404)
        data = resp.json()
        return Receipt(
            transaction_id=str(data["transactionId"]),
            duplicate=bool(data.get("duplicate")),
            http_status=resp.status_code,
            latency_ms=latency,
        )

    async def status(self, service_address: str, idempotency_key: str) -> Receipt | None:
        url = self._operator_url(service_address, f"/messages/{idempotency_key}")
        resp, latency = await self._call(service_address, "GET", url)
        if resp.status_code == 404:
            return None
        data = resp.json()
        return Receipt(str(data["transactionId"]), True, resp.status_code, latency)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
