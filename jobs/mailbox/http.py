"""The mailbox interface as JSON over HTTP (httpx): pooled keep-alive connections, one
circuit breaker per service (FaR and each operator), failures classified for the retry
policy of the delivery step.

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
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx

from jobs.mailbox.adapter import (
    MAX_RECIPIENTS_PER_LOOKUP,
    CircuitOpenError,
    PermanentError,
    Reachability,
    Reachable,
    Receipt,
    SecureMessage,
    TransientError,
)
from jobs.mailbox.breaker import CircuitBreaker

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


class HttpMailbox:
    """JSON-over-HTTP implementation of :class:`jobs.mailbox.adapter.MailboxAdapter`."""

    def __init__(
        self,
        far_url: str,
        *,
        sender: str,
        concurrency: int = 32,
        timeout_s: float = 10.0,
        breaker_threshold: int = 20,
        breaker_cooldown_s: float = 5.0,
    ) -> None:
        self.far_url = far_url.rstrip("/")
        self.sender = sender
        # httpcore scans every connection of a pool for each request (idle/expired checks),
        # so CPU per request grows with the pool: several pools of ≤ 8 connections, used
        # round-robin, give the same concurrency for about half the CPU at 32.
        per_pool = min(concurrency, POOL_CONNECTIONS)
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(timeout_s),
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
                headers={"User-Agent": "bevis-mailbox/1"},
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

    @classmethod
    def from_settings(cls, settings) -> HttpMailbox:
        return cls(
            settings.mailbox_url,
            sender=settings.mailbox_sender,
            concurrency=settings.mailbox_concurrency,
            timeout_s=settings.mailbox_timeout_s,
            breaker_threshold=settings.mailbox_breaker_threshold,
            breaker_cooldown_s=settings.mailbox_breaker_cooldown_s,
        )

    def breaker(self, service: str) -> CircuitBreaker:
        b = self.breakers.get(service)
        if b is None:
            b = self.breakers[service] = CircuitBreaker(service, *self._breaker_args)
        return b

    async def _call(
        self, service: str, method: str, url: str, **kwargs
    ) -> tuple[httpx.Response, float]:
        """One request through the service's breaker; 5xx/429/network → TransientError,
        other 4xx → PermanentError (404 is returned to the caller)."""
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
            t0 = time.perf_counter()
            resp = await self._clients[slot].request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            breaker.failure()
            raise TransientError(f"{service}: {type(exc).__name__}", ambiguous=False) from exc
        except httpx.TransportError as exc:  # read timeouts, resets: it may have arrived
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
        if resp.status_code >= 400 and resp.status_code != 404:
            detail = resp.text[:120].replace("\n", " ")
            raise PermanentError(f"{service}: HTTP {resp.status_code} {detail}", resp.status_code)
        return resp, latency

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

    async def deliver(self, service_address: str, message: SecureMessage) -> Receipt:
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
            f"{service_address.rstrip('/')}/deliverSecure",
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
        resp, latency = await self._call(
            service_address,
            "GET",
            f"{service_address.rstrip('/')}/messages/{idempotency_key}",
        )
        if resp.status_code == 404:
            return None
        data = resp.json()
        return Receipt(str(data["transactionId"]), True, resp.status_code, latency)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
