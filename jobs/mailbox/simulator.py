"""A mailbox simulator for local work and tests: FaR's reachability look-up and the
operators' ``deliverSecure``, as a real HTTP server (FastAPI + uvicorn).

* Reachability is deterministic per recipient (a hash): ``simulator_secure_share`` of them
  have a secure mailbox (default 73 %), a few of those are pending or have not accepted
  the sender, some others have an anonymous mailbox; each secure recipient has one
  operator (Kivra, Min myndighetspost, e-Boks, Billo).
* Deliveries are idempotent: the same Idempotency-Key returns the same transaction id and
  stores no second message. Messages are kept in SQLite (``simulator_db``) for inspection.
* Faults, for drills and tests: latency, a random 500 rate, lost acknowledgements (the
  message is stored but the answer is a 502), outage windows (503 + Retry-After), and a
  deterministic outage that begins after N stored messages and lasts M requests.
* Authentication like a real operator's, when configured: HTTPS with a server certificate
  (``simulator_tls_cert``/``simulator_tls_key``), client certificates required and verified
  against ``simulator_client_ca`` (mutual TLS), and a bearer token (``simulator_token``,
  401 without it) on FaR and the operators.
* For audits, ``GET /_admin/messages`` lists what the operators hold (idempotency key,
  operator, stored at) — the operator's side of a drill, to compare with the ledger.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import socket
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from jobs.mailbox.adapter import MAX_MESSAGE_BYTES, MAX_RECIPIENTS_PER_LOOKUP, MAX_SUBJECT_CHARS
from jobs.mailbox.endpoints import SIMULATOR_OPERATORS
from jobs.settings import Settings, get_settings

OPERATORS = tuple(  # (id, share of secure mailboxes)
    zip(SIMULATOR_OPERATORS, (0.55, 0.30, 0.10, 0.05), strict=True)
)
ANONYMOUS_SHARE = 0.02  # of all recipients, beside the secure share
PENDING_SHARE = 0.01  # of secure mailboxes
NOT_ACCEPTED_SHARE = 0.02  # of secure mailboxes

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    idempotency_key TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL UNIQUE,
    operator TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    filename TEXT NOT NULL,
    checksum TEXT NOT NULL,
    size INTEGER NOT NULL,
    attachment BLOB NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT,
    operator TEXT,
    http_status INTEGER,
    at TEXT
);
"""


def _unit(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reachability(recipient: str, share: float, base_url: str) -> dict[str, Any]:
    """The simulated FaR answer for one recipient (deterministic)."""
    u = _unit("far", recipient)
    result: dict[str, Any] = {
        "recipient": recipient,
        "status": "Not",
        "pending": False,
        "senderAccepted": False,
        "operator": None,
        "serviceAddress": None,
    }
    if u < share:
        op_u, acc = _unit("operator", recipient), 0.0
        operator = OPERATORS[-1][0]
        for name, op_share in OPERATORS:
            acc += op_share
            if op_u < acc:
                operator = name
                break
        result.update(
            status="Secure",
            pending=_unit("pending", recipient) < PENDING_SHARE,
            senderAccepted=_unit("accepted", recipient) >= NOT_ACCEPTED_SHARE,
            operator=operator,
            serviceAddress=f"{base_url}/operators/{operator}",
        )
    elif u < share + ANONYMOUS_SHARE:
        result["status"] = "Anonymous"
    return result


def _windows(specs: list[str]) -> list[tuple[datetime, datetime]]:
    out = []
    for spec in specs:
        start, _, end = spec.partition("/")
        a, b = datetime.fromisoformat(start), datetime.fromisoformat(end)
        out.append(
            (a if a.tzinfo else a.replace(tzinfo=UTC), b if b.tzinfo else b.replace(tzinfo=UTC))
        )
    return out


class MailboxStore:
    """SQLite storage of delivered messages (one connection, serialised by a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        path.chmod(0o600)

    def find(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT transaction_id, operator FROM messages WHERE idempotency_key = ?", (key,)
            ).fetchone()
        return row

    def store(
        self, key: str, operator: str, msg: dict[str, Any], attachment: bytes
    ) -> tuple[str, bool]:
        """(transaction id, duplicate). The primary key makes a second insert a no-op."""
        tx = uuid.uuid4().hex
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    tx,
                    operator,
                    msg["sender"],
                    msg["recipient"],
                    msg["subject"],
                    msg["body"],
                    msg["attachments"][0]["filename"],
                    msg["attachments"][0]["checksum"]["value"],
                    len(attachment),
                    attachment,
                    datetime.now(UTC).isoformat(),
                ),
            )
            if cur.rowcount == 1:
                return tx, False
            row = self._db.execute(
                "SELECT transaction_id FROM messages WHERE idempotency_key = ?", (key,)
            ).fetchone()
        return row[0], True

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM messages").fetchone()[0]

    def listing(self) -> list[dict[str, str]]:
        """Every stored message's idempotency key, operator and time stored (no content)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idempotency_key, operator, received_at FROM messages ORDER BY received_at"
            ).fetchall()
        return [{"idempotency_key": k, "operator": o, "stored_at": t} for k, o, t in rows]

    def close(self) -> None:
        self._db.close()


class FaultState:
    """Faults the simulator injects; the drill outage is a counter, not a clock, so tests
    are deterministic."""

    def __init__(self, s: Settings) -> None:
        self.error_rate = s.simulator_error_rate
        self.ack_loss_rate = s.simulator_ack_loss_rate
        self.windows = _windows(s.simulator_outages)
        self.outage_after = s.simulator_outage_after
        self.outage_left = s.simulator_outage_requests
        self.retry_after = s.simulator_retry_after_s
        self.latency = s.simulator_latency_ms / 1000
        self.processing = s.simulator_processing_ms / 1000
        self.rng = random.Random(0)
        self.scope = s.simulator_outage_scope  # which endpoints: all | operators | far | status
        self.lock = threading.Lock()

    def outage_now(self, stored: int, endpoint: str) -> bool:
        if self.scope not in ("all", endpoint):
            return False
        now = datetime.now(UTC)
        if any(a <= now < b for a, b in self.windows):
            return True
        with self.lock:
            if (
                self.outage_after is not None
                and stored >= self.outage_after
                and self.outage_left > 0
            ):
                self.outage_left -= 1
                return True
        return False


def create_app(settings: Settings | None = None, base_url: str | None = None):
    """The FastAPI app of the simulator. FaR puts ``simulator_operator_base_url`` into the
    service addresses, else ``base_url``, else the address the request came to."""
    s = settings or get_settings()
    base_url = s.simulator_operator_base_url or base_url
    token = s.simulator_token.get_secret_value() if s.simulator_token else None

    def authorised(request: Request) -> None:
        """FaR and the operators answer 401 without the configured bearer token."""
        if token is None:
            return
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            raise HTTPException(401, "bearer token required", {"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorised)] if token is not None else []  # no cost without a token

    db_path = s.simulator_db or s.resolved_data_dir() / "mailbox-sim.db"
    store = MailboxStore(Path(db_path))
    faults = FaultState(s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        store.close()

    app = FastAPI(title="bevis mailbox simulator", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.store = store
    app.state.faults = faults
    stats = {"lookups": 0, "deliveries": 0, "duplicates": 0, "errors": 0, "outage": 0}
    app.state.stats = stats

    def _base(request: Request) -> str:
        return base_url or str(request.base_url).rstrip("/")

    def _unavailable() -> Response:
        stats["outage"] += 1
        return JSONResponse(
            {"error": "service unavailable"},
            status_code=503,
            headers={"Retry-After": f"{faults.retry_after:g}"},
        )

    async def _latency() -> None:
        if faults.latency:
            await asyncio.sleep(faults.latency)

    @app.post("/far/isReachable", dependencies=guarded)
    async def is_reachable(request: Request):
        await _latency()
        if faults.outage_now(store.count() if faults.outage_after is not None else 0, "far"):
            return _unavailable()
        data = await request.json()
        recipients = data.get("recipients")
        if not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS_PER_LOOKUP:
            return JSONResponse({"error": f"1..{MAX_RECIPIENTS_PER_LOOKUP} recipients"}, 400)
        stats["lookups"] += 1
        base = _base(request)
        share = s.simulator_secure_share
        return {"results": [reachability(str(r), share, base) for r in recipients]}

    @app.post("/operators/{operator}/deliverSecure", dependencies=guarded)
    async def deliver_secure(operator: str, request: Request):
        # The request is received first, then processed (the latency): like a real
        # operator, the simulator stores a message whose sender stopped waiting for it.
        raw = await request.body()
        await _latency()
        if faults.processing:
            await asyncio.sleep(faults.processing)
        if operator not in dict(OPERATORS):
            return JSONResponse({"error": "no such operator"}, 404)
        key = request.headers.get("Idempotency-Key")
        if not key or len(key) > 128:
            return JSONResponse({"error": "Idempotency-Key header required (≤128)"}, 400)
        if faults.outage_now(store.count() if faults.outage_after is not None else 0, "operators"):
            return _unavailable()
        if faults.error_rate and faults.rng.random() < faults.error_rate:
            stats["errors"] += 1
            return JSONResponse({"error": "internal error (simulated)"}, 500)
        if len(raw) > MAX_MESSAGE_BYTES * 4 // 3 + 65536:
            return JSONResponse({"error": "message larger than 2 MB"}, 413)
        try:
            msg = await request.json()
            att = msg["attachments"][0]
            attachment = base64.b64decode(att["content"], validate=True)
            subject, body = str(msg["subject"]), str(msg["body"])
            recipient = str(msg["recipient"])
            checksum = att["checksum"]["value"]
        except (ValueError, KeyError, IndexError, TypeError):
            return JSONResponse({"error": "malformed message"}, 400)
        if len(subject) > MAX_SUBJECT_CHARS:
            return JSONResponse({"error": f"subject longer than {MAX_SUBJECT_CHARS}"}, 422)
        size = len(attachment) + len(body.encode()) + len(subject.encode())
        if size > MAX_MESSAGE_BYTES:
            return JSONResponse({"error": "message larger than 2 MB"}, 413)
        if hashlib.sha256(attachment).hexdigest() != checksum:
            return JSONResponse({"error": "attachment checksum mismatch"}, 422)
        far = reachability(recipient, s.simulator_secure_share, "")
        if far["operator"] != operator or not far["senderAccepted"] or far["pending"]:
            return JSONResponse({"error": "recipient has no active mailbox here"}, 422)
        tx, duplicate = store.store(key, operator, msg, attachment)
        stats["duplicates" if duplicate else "deliveries"] += 1
        if not duplicate and faults.ack_loss_rate and _unit("ackloss", key) < faults.ack_loss_rate:
            return JSONResponse({"error": "bad gateway (simulated lost ack)"}, 502)
        return {"transactionId": tx, "duplicate": duplicate, "status": "delivered"}

    @app.get("/operators/{operator}/messages/{key}", dependencies=guarded)
    async def message_status(operator: str, key: str):
        if faults.scope == "status":
            stored = store.count() if faults.outage_after is not None else 0
            if faults.outage_now(stored, "status"):
                return _unavailable()
        found = store.find(key)
        if found is None or found[1] != operator:
            return JSONResponse({"error": "unknown message"}, 404)
        return {"transactionId": found[0], "status": "delivered"}

    @app.get("/_admin/stats")
    async def admin_stats():
        return {**stats, "messages": store.count()}

    @app.get("/_admin/messages")
    async def admin_messages():
        """What the operators hold: idempotency key, operator and time stored, per message
        (drills audit this against the ledger's attempt rows)."""
        return {"messages": store.listing()}

    @app.post("/_admin/outage")
    async def admin_outage(request: Request):
        """Start an outage now: {"requests": n} or {"seconds": s}; "scope": "all" (default),
        "operators" (FaR keeps answering), "far", or "status" (only the status call)."""
        data = await request.json()
        with faults.lock:
            faults.scope = data.get("scope", "all")
            if "requests" in data:
                faults.outage_after = 0
                faults.outage_left = int(data["requests"])
            if "seconds" in data:
                now = datetime.now(UTC)
                faults.windows.append(
                    (now, datetime.fromtimestamp(time.time() + float(data["seconds"]), UTC))
                )
        return {"ok": True}

    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def tls_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options from the simulator settings (empty: plain HTTP)."""
    if not settings.simulator_tls_cert:
        if settings.simulator_client_ca:
            raise ValueError("simulator_client_ca needs simulator_tls_cert (mutual TLS is TLS)")
        return {}
    out: dict[str, Any] = {
        "ssl_certfile": str(settings.simulator_tls_cert),
        "ssl_keyfile": str(settings.simulator_tls_key) if settings.simulator_tls_key else None,
    }
    if settings.simulator_client_ca:
        out.update(ssl_ca_certs=str(settings.simulator_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return out


@contextlib.contextmanager
def running_server(
    make_app: Callable[[str], Any], host: str = "127.0.0.1", tls: dict[str, Any] | None = None
) -> Iterator[str]:
    """Serve ``make_app(url)`` with uvicorn on a free port in a background thread (tests
    and drills; also for fakes such as a look-up service of an attacker's choosing);
    yields its URL (https when ``tls`` names a certificate)."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    scheme = "https" if tls else "http"
    url = f"{scheme}://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(url), log_level="warning", access_log=False, lifespan="on", **(tls or {})
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def running_simulator(settings: Settings | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the simulator on a free port in a background thread (tests); yields its URL
    (https when ``simulator_tls_cert`` is set)."""
    s = settings or get_settings()
    with running_server(lambda url: create_app(s, base_url=url), host, tls_config(s)) as url:
        yield url


def serve(host: str = "127.0.0.1", port: int = 8787, settings: Settings | None = None) -> None:
    """Run the simulator in the foreground (``bevis simulator mailbox``)."""
    import uvicorn

    s = settings or get_settings()
    tls = tls_config(s)
    url = f"{'https' if tls else 'http'}://{host}:{port}"
    uvicorn.run(
        create_app(s, base_url=url),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        **tls,
    )
