"""Trust material at the EU gateway: upload the active DSC (``bevis gateway upload-dsc``)
and download the trust list into a folder that ``bevis verify --trust DIR`` reads
(``bevis gateway trustlist --out DIR``).

Each trust-list entry is checked as the gateway's reference client does (dgc-lib
``DgcGatewayConnectorUtils``/``DgcGatewayDownloadConnector``): the thumbprint is the SHA-256
of rawData; AUTHENTICATION, UPLOAD and CSCA entries carry a detached CMS signature over
their DER made by the pinned trust anchor; a DSC is signed by a CSCA of its country (whose
subject is its issuer) and its CMS signature is made by an UPLOAD certificate of the same
country. Entries that fail are left out, with the reason, in ``trustlist.json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jobs.errors import ConfigurationInvalid
from jobs.gateway.client import GatewayClient, GatewayError
from jobs.settings import Settings, get_settings
from jobs.storage import write_bytes_atomic, write_text_atomic

TRUSTED_TYPES = ("AUTHENTICATION", "UPLOAD", "CSCA")


def upload_signer(settings: Settings | None = None) -> tuple[Any, Any]:
    """(upload certificate, its private key) from the settings (default: the development
    ones of ``bevis keys init-dev`` in <key dir>/gateway)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from signing.keys import GATEWAY_DIR, UPLOAD_FILE, UPLOAD_KEY_FILE

    s = settings or get_settings()
    folder = s.resolved_key_dir() / GATEWAY_DIR
    cert_path = s.gateway_upload_cert or folder / UPLOAD_FILE
    key_path = s.gateway_upload_key or folder / UPLOAD_KEY_FILE
    for p in (cert_path, key_path):
        if not Path(p).is_file():
            raise ConfigurationInvalid(
                f"{p} not found: the gateway upload certificate and key "
                "(BEVIS_GATEWAY_UPLOAD_CERT/_KEY; 'bevis keys init-dev' makes development ones)"
            )
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    passphrase = s.key_passphrase.get_secret_value().encode() if s.key_passphrase else None
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), passphrase)
    except (TypeError, ValueError) as exc:
        raise ConfigurationInvalid(f"cannot open {key_path} (passphrase?)") from exc
    return cert, key


def upload_dsc(
    settings: Settings | None = None,
    *,
    dsc_path: Path | None = None,
    client: GatewayClient | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Upload the DSC (default: the active one, <key dir>/dsc.pem) in a CMS signed with the
    upload certificate. One the gateway already holds (409) is reported, not an error."""
    from signing.cms import sign_b64
    from signing.keys import DSC_FILE, kid_of

    s = settings or get_settings()
    path = dsc_path or s.resolved_key_dir() / DSC_FILE
    if not Path(path).is_file():
        raise ConfigurationInvalid(f"{path} not found: the DSC to upload")
    dsc = x509.load_pem_x509_certificate(Path(path).read_bytes())
    cert, key = upload_signer(s)
    body = sign_b64(dsc.public_bytes(serialization.Encoding.DER), cert, key)
    own = client is None
    client = client or GatewayClient.from_settings(s, url)
    state = "uploaded"
    try:
        client.upload_dsc(body)
    except GatewayError as exc:
        if exc.status != 409:
            raise
        state = "already_there"
    finally:
        if own:
            client.close()
    return {"kid": base64.b64encode(kid_of(dsc)).decode(), "state": state}


def _detached_by(entry: dict[str, Any], der: bytes) -> x509.Certificate | None:
    """The signer of the entry's detached CMS over ``der`` when it verifies, else None."""
    from signing.cms import CmsError, parse_verify

    signature = entry.get("signature")
    if not signature:
        return None
    try:
        message = parse_verify(signature, detached_content=der)
    except CmsError:
        return None
    return message.signer if message.verified else None


def check_trust_list(
    entries: list[dict[str, Any]], anchor: x509.Certificate
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(accepted, rejected) entries, each with its certificate (accepted) or reason."""
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    parsed: list[tuple[dict[str, Any], bytes, x509.Certificate]] = []
    for e in entries:
        try:
            der = base64.b64decode(e.get("rawData") or "", validate=True)
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            rejected.append({**_brief(e), "reason": "rawData is no certificate (deleted?)"})
            continue
        if hashlib.sha256(der).hexdigest() != e.get("thumbprint"):
            rejected.append({**_brief(e), "reason": "thumbprint does not match rawData"})
            continue
        parsed.append((e, der, cert))
    trusted: dict[tuple[str, str], list[x509.Certificate]] = {}
    for e, der, cert in parsed:
        if e.get("certificateType") not in TRUSTED_TYPES:
            continue
        if _detached_by(e, der) != anchor:
            rejected.append({**_brief(e), "reason": "not signed by the trust anchor"})
            continue
        trusted.setdefault((e["certificateType"], e["country"]), []).append(cert)
        accepted.append({**_brief(e), "cert": cert})
    for e, der, cert in parsed:
        if e.get("certificateType") != "DSC":
            continue
        cscas = [c for c in trusted.get(("CSCA", e["country"]), []) if c.subject == cert.issuer]
        if not any(_issued_by(cert, c) for c in cscas):
            rejected.append({**_brief(e), "reason": "not signed by a CSCA of its country"})
            continue
        if _detached_by(e, der) not in trusted.get(("UPLOAD", e["country"]), []):
            rejected.append(
                {**_brief(e), "reason": "not signed by an upload certificate of its country"}
            )
            continue
        accepted.append({**_brief(e), "cert": cert})
    return accepted, rejected


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except Exception:  # InvalidSignature, another issuer, an unsupported key
        return False


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    return {k: e.get(k) for k in ("kid", "country", "certificateType", "thumbprint")}


def download_trust_list(
    out_dir: Path,
    settings: Settings | None = None,
    *,
    anchor_path: Path | None = None,
    client: GatewayClient | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Download the trust list, check every entry, and write the accepted DSCs as
    ``<country>-<kid hex>.pem`` into ``out_dir`` (what ``bevis verify --trust`` reads) with
    ``trustlist.json`` (every entry: accepted or why not)."""
    s = settings or get_settings()
    path = anchor_path or s.gateway_trust_anchor
    if path is None or not Path(path).is_file():
        raise ConfigurationInvalid(
            "the gateway's trust anchor is needed (BEVIS_GATEWAY_TRUST_ANCHOR or --trust-anchor)"
        )
    anchor = x509.load_pem_x509_certificate(Path(path).read_bytes())
    own = client is None
    client = client or GatewayClient.from_settings(s, url)
    try:
        entries = client.trust_list()
    finally:
        if own:
            client.close()
    accepted, rejected = check_trust_list(entries, anchor)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.pem"):
        old.unlink()  # the folder is the trust list: a DSC no longer in it is not trusted
    dscs = [a for a in accepted if a["certificateType"] == "DSC"]
    for a in dscs:
        name = f"{a['country']}-{base64.b64decode(a['kid']).hex()}.pem"
        write_bytes_atomic(a["cert"].public_bytes(serialization.Encoding.PEM), out / name)
    summary = {
        "accepted": [{k: v for k, v in a.items() if k != "cert"} for a in accepted],
        "rejected": rejected,
    }
    write_text_atomic(json.dumps(summary, indent=2), out / "trustlist.json")
    return {"out": str(out), "dscs": len(dscs), "accepted": len(accepted), "rejected": rejected}
