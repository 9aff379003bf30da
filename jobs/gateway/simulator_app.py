"""The gateway simulator's app: the revocation-list endpoints with the gateway's rules, in
its order, its problem reports and its certificate-authentication filter (on the headers the
load balancer sets: see jobs.gateway.simulator)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import urllib.parse
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from jobs.gateway.simulator_store import (
    AUTHENTICATION,
    DELETER,
    READER,
    UPLOAD,
    UPLOADER,
    GatewayStore,
    from_us,
    now_utc,
    parse_instant,
)
from signing import cms

HASH_TYPES = ("UCI", "SIGNATURE", "COUNTRYCODEUCI")
HASH_RE = re.compile(r"^[A-Za-z0-9+/]{22}==$")
UUID_RE = re.compile(r"^[0-9a-f]{8}\b-[0-9a-f]{4}\b-[0-9a-f]{4}\b-[0-9a-f]{4}\b-[0-9a-f]{12}$")
CMS_TYPES = ("application/cms", "application/cms-text")
MAX_BATCH_LIST_SIZE = 1000  # RevocationListService.MAX_BATCH_LIST_SIZE
THUMBPRINT_HEADER, DN_HEADER = "x-ssl-client-sha256", "x-ssl-client-dn"


# --- the gateway's rules ----------------------------------------------------------------------


class Problem(Exception):
    """An answer with the gateway's ProblemReportDto."""

    def __init__(
        self, status: int, code: str, problem: str, send_value: str = "", details: str = ""
    ):
        super().__init__(problem)
        self.status, self.code, self.problem = status, code, problem
        self.send_value, self.details = send_value, details

    def response(self) -> JSONResponse:
        body = {
            "code": self.code,
            "problem": self.problem,
            "sendValue": self.send_value,
            "details": self.details,
        }
        return JSONResponse(body, status_code=self.status)


def normalize_thumbprint(value: str | None) -> str | None:
    """CertificateAuthenticationFilter.normalizeCertificateHash: 64 hex characters are taken
    as they are; anything else is URL-decoded (when it holds '%'), base64-decoded, hex."""
    if value is None:
        return None
    if len(value) == 64 and re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value
    try:
        if "%" in value:
            value = urllib.parse.unquote(value)
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def parse_dn(dn: str) -> dict[str, str]:
    """The filter's naive DN parser: split on ',', then '=', keep 2-part pieces, keys upper
    case and trimmed, the first of duplicates wins."""
    out: dict[str, str] = {}
    for part in dn.split(","):
        pieces = part.split("=")
        if len(pieces) == 2:
            out.setdefault(pieces[0].upper().strip(), pieces[1].strip())
    return out


def authenticate(request: Request, store: GatewayStore, role: str | None) -> tuple[str, str]:
    """(country, thumbprint) of the authenticated client, or a Problem as the filter says
    (``role`` None: the endpoint needs authentication only)."""
    dn = request.headers.get(DN_HEADER)
    thumbprint = normalize_thumbprint(request.headers.get(THUMBPRINT_HEADER))
    if dn is None or thumbprint is None:
        raise Problem(401, "0x400", "No thumbprint or distinguish name")
    dn = urllib.parse.unquote(dn)
    country = parse_dn(dn).get("C")
    if country is None:
        raise Problem(400, "0x401", "Client Certificate must contain country property", dn)
    roles = store.party_roles(thumbprint, country, AUTHENTICATION)
    if roles is None:
        raise Problem(401, "0x402", "Client is not authorized to access the service")
    if role is not None and role not in roles:
        raise Problem(403, "0x403", "Client is not authorized to access the endpoint")
    return country, thumbprint


async def _signed_body(request: Request) -> tuple[cms.SignedMessage, str]:
    """The CMS converter and the controller's signature check."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in CMS_TYPES:
        raise Problem(
            415, "0x000", "Unsupported Media Type", ctype, "application/cms or application/cms-text"
        )
    raw = await request.body()
    try:
        message = cms.parse_verify(raw)
    except cms.CmsError as exc:
        raise Problem(400, "0x402", str(exc)) from None
    try:
        message.payload.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise Problem(400, "0x402", "CMS Message payload needs to be a String") from None
    if not message.verified:
        raise Problem(
            400,
            "0x260",
            "CMS signature is invalid",
            "",
            "Submitted string needs to be signed by a valid upload certificate",
        )
    return message, raw.decode("utf-8", errors="replace")


def _check_upload_certificate(store: GatewayStore, message: cms.SignedMessage, country: str) -> str:
    thumbprint = cms.thumbprint(message.signer)
    if store.party_roles(thumbprint, country, UPLOAD) is None:
        raise Problem(
            403,
            "0x000",
            "Invalid Upload Certificate",
            message.signer.subject.rfc4514_string(),
            "Certificate used to sign the batch is not a valid/ allowed upload certificate "
            "for your country.",
        )
    return thumbprint


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Problem(
            400, "0x000", "JSON Could not be parsed", "", "JSON could not be parsed"
        ) from None


def batch_problems(dto: dict[str, Any]) -> list[str]:
    """The RevocationBatchDto constraints, in the gateway's words ('field: message'; entries
    as 'Batch Entry i: hash: ...')."""
    out = []
    country = dto.get("country")
    if country is None:
        out.append("country: must not be null")
    elif len(country) != 2:
        out.append("country: length must be between 2 and 2")
    kid = dto.get("kid")
    if kid is not None and not 11 <= len(kid) <= 12:
        out.append("kid: length must be between 11 and 12")
    if dto.get("hashType") is None:
        out.append("hashType: must not be null")
    entries = dto.get("entries")
    if entries is None:
        out.append("entries: must not be null")
        return out
    if not 1 <= len(entries) <= 1000:
        out.append("entries: size must be between 1 and 1000")
    for i, entry in enumerate(entries):
        h = entry.get("hash")
        if h is None:
            out.append(f"Batch Entry {i}: hash: must not be null")
            continue
        if not HASH_RE.match(h):
            out.append(f'Batch Entry {i}: hash: must match "^[A-Za-z0-9+/]{{22}}==$"')
        if len(h) != 24:
            out.append(f"Batch Entry {i}: hash: length must be between 24 and 24")
    return out


def _typed_batch(obj: Any) -> dict[str, Any]:
    """What Jackson's binding refuses as 'JSON could not be parsed': not an object, wrong
    types, an unknown hash type, an unparseable expires."""
    if not isinstance(obj, dict):
        raise Problem(400, "0x000", "JSON Could not be parsed", "", "JSON could not be parsed")
    for name in ("country", "kid"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise Problem(400, "0x000", "JSON Could not be parsed", "", f"{name} is no string")
    ht = obj.get("hashType")
    if ht is not None and ht not in HASH_TYPES:
        raise Problem(400, "0x000", "JSON Could not be parsed", "", "unknown hashType")
    entries = obj.get("entries")
    if entries is not None and (
        not isinstance(entries, list)
        or not all(
            isinstance(e, dict) and isinstance(e.get("hash", ""), (str, type(None)))
            for e in entries
        )
    ):
        raise Problem(400, "0x000", "JSON Could not be parsed", "", "entries")
    if obj.get("expires") is not None:
        try:
            parse_instant(obj["expires"])
        except ValueError:
            raise Problem(400, "0x000", "JSON Could not be parsed", "", "expires") from None
    return obj


def create_app(store: GatewayStore) -> FastAPI:
    """The gateway's revocation-list endpoints over ``store`` (authentication by the load
    balancer's headers: see :class:`MutualTlsProtocol` for how they are set)."""
    app = FastAPI(
        title="bevis EU gateway simulator", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.store = store

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.get("/revocation-list")
    async def download_batch_list(request: Request):
        authenticate(request, store, READER)
        header = request.headers.get("if-modified-since")
        if header is None:
            raise Problem(
                400,
                "0x001",
                "Validation Error",
                "",
                "Required header 'If-Modified-Since' is not present.",
            )
        try:
            since = parse_instant(header)
        except ValueError:
            raise Problem(
                400, "0x001", "Validation Error", header, "If-Modified-Since is no ISO date-time"
            ) from None
        if since > now_utc():
            raise Problem(400, "", "IfModifiedSince must be in past", "", "")
        rows = store.since(since, MAX_BATCH_LIST_SIZE + 1)
        if not rows:
            return Response(status_code=204)
        return JSONResponse(
            {
                "more": len(rows) > MAX_BATCH_LIST_SIZE,
                "batches": [
                    {
                        "batchId": b,
                        "country": c,
                        "date": from_us(ch).isoformat(),
                        "deleted": bool(d),
                    }
                    for b, c, ch, d in rows[:MAX_BATCH_LIST_SIZE]
                ],
            }
        )

    @app.get("/revocation-list/{batch_id}")
    async def download_batch(batch_id: str, request: Request):
        authenticate(request, store, READER)
        if not UUID_RE.match(batch_id):
            raise Problem(
                400, "0x001", "Validation Error", "", "downloadBatch.batchId: must match UUID"
            )
        found = store.batch(batch_id)
        if found is None:
            raise Problem(404, "0x000", "Batch does not exist.", "", "Batch not found")
        if found["deleted"]:
            raise Problem(410, "0x000", "Batch already deleted.", "", "Batch already deleted.")
        accept = request.headers.get("accept", "application/cms")
        media = "application/cms-text" if "application/cms-text" in accept else "application/cms"
        return Response(found["signed_batch"], media_type=media, headers={"ETag": batch_id})

    @app.post("/revocation-list")
    async def upload_batch(request: Request):
        country, _auth = authenticate(request, store, UPLOADER)
        message, raw = await _signed_body(request)
        thumbprint = _check_upload_certificate(store, message, country)
        dto = _typed_batch(_json(message.payload))
        if dto.get("expires") is None or parse_instant(dto["expires"]) <= now_utc():
            details = "Expiration date must be in future."
            if dto.get("expires") is None:
                raise Problem(
                    400, "0x000", "Batch has invalid values.", "", "expires: must not be null"
                )
            raise Problem(400, "0x000", "Invalid Dates", "", details)
        problems = batch_problems(dto)
        if problems:
            raise Problem(400, "0x000", "Batch has invalid values.", "", ", ".join(problems))
        if dto["country"] != country:
            raise Problem(
                403,
                "0x000",
                "Invalid Country sent",
                "",
                "Country does not match your authentication.",
            )
        batch_id = str(uuid.uuid4())
        store.audit(country, thumbprint, "CREATED", f"Uploaded Revocation Batch ({batch_id})")
        store.add_batch(
            batch_id=batch_id,
            country=dto["country"],
            expires=dto["expires"],
            kind=dto["hashType"],
            kid=dto.get("kid"),
            signed_batch=raw,
        )
        while store.hold_uploads.is_set():  # drill: stored, but the answer is held
            await asyncio.sleep(0.05)
        return Response(status_code=201, headers={"ETag": batch_id})

    async def delete_batch(request: Request):
        country, _auth = authenticate(request, store, DELETER)
        message, _raw = await _signed_body(request)
        thumbprint = _check_upload_certificate(store, message, country)
        obj = _json(message.payload)
        if not isinstance(obj, dict) or not isinstance(obj.get("batchId", ""), (str, type(None))):
            raise Problem(400, "0x000", "JSON Could not be parsed", "", "JSON could not be parsed")
        batch_id = obj.get("batchId")
        if batch_id is None or not UUID_RE.match(batch_id):
            raise Problem(
                400, "0x000", "Delete Request has invalid values.", "", "batchId: must match UUID"
            )
        found = store.batch(batch_id)
        if found is None:
            raise Problem(
                404, "0x000", "Batch does not exists.", "", "Revocation Batch does not exists"
            )
        if found["country"] != country:
            raise Problem(
                403,
                "0x000",
                "Invalid Country sent",
                "",
                "Revocation Batch does not belong to your country",
            )
        if found["deleted"]:
            raise Problem(
                410,
                "0x000",
                "Batch is already deleted.",
                "",
                "Revocation Batch is already deleted.",
            )
        store.mark_deleted(batch_id)
        store.audit(country, thumbprint, "DELETED", f"Deleted Revocation Batch ({batch_id})")
        return Response(status_code=204)

    app.add_api_route("/revocation-list", delete_batch, methods=["DELETE"])
    app.add_api_route("/revocation-list/delete", delete_batch, methods=["POST"])

    @app.get("/_admin/batches")
    async def admin_batches():
        return [{**b, "changed": b["changed"].isoformat()} for b in store.batches()]

    @app.get("/_admin/audit")
    async def admin_audit():
        return store.audit_events()

    @app.post("/_admin/cleanup")
    async def admin_cleanup():
        return {"deleted": store.cleanup()}

    @app.post("/_admin/hold")
    async def admin_hold(request: Request):
        hold = bool((await request.json()).get("uploads"))
        store.hold_uploads.set() if hold else store.hold_uploads.clear()
        return {"hold_uploads": hold}

    return app
