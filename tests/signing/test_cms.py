"""CMS SignedData as the gateway takes it: what signing.cms writes, the real openssl binary
verifies (content byte for byte); what it parses, it parses by the gateway's rules; and the
development gateway certificates that `bevis keys init-dev` makes sign such packages."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from signing import cms
from signing.keys import (
    AUTH_FILE,
    AUTH_KEY_FILE,
    GATEWAY_DIR,
    UPLOAD_FILE,
    UPLOAD_KEY_FILE,
    init_dev_keys,
    make_gateway_cert,
)
from signing.revocation import RevocationError, batch_json, read_batches

OPENSSL = shutil.which("openssl")
NOW = dt.datetime.now(dt.UTC)
BATCH = batch_json(
    "SE",
    "2031-01-01T00:00:00Z",
    "UNKNOWN_KID",
    "UCI",
    ["CgoKCgoKCgoKCgoKCgoKCg==", "CwsLCwsLCwsLCwsLCwsLCw=="],
)


@pytest.fixture(scope="module")
def upload():
    return make_gateway_cert("SE", "upload", NOW)


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _openssl_verify(tmp_path: Path, der: bytes, cert: x509.Certificate, *extra: str):
    assert OPENSSL, "the openssl binary is part of the test environment (apt: openssl)"
    (tmp_path / "msg.der").write_bytes(der)
    ca = _pem(tmp_path / "signer.pem", cert)
    return subprocess.run(
        [OPENSSL, "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "msg.der"),
         "-CAfile", str(ca), "-binary", "-purpose", "any", *extra],
        capture_output=True,
        timeout=60,
    )  # fmt: skip


def test_openssl_accepts_the_encapsulated_batch(tmp_path: Path, upload) -> None:
    key, cert = upload
    der = cms.sign(BATCH, cert, key)
    done = _openssl_verify(tmp_path, der, cert)
    assert done.returncode == 0, done.stderr
    assert b"Verification successful" in done.stderr
    assert done.stdout == BATCH  # the content is the JSON, byte for byte (no CRLF)
    parsed = cms.parse_verify(base64.b64encode(der))
    assert parsed.verified and parsed.payload == BATCH
    assert parsed.signer == cert
    assert cms.thumbprint(parsed.signer) == cms.thumbprint(cert)


def test_openssl_refuses_a_tampered_or_foreign_message(tmp_path: Path, upload) -> None:
    key, cert = upload
    der = bytearray(cms.sign(BATCH, cert, key))
    at = bytes(der).index(b"CgoKCgoK")
    der[at] ^= 0x01
    done = _openssl_verify(tmp_path, bytes(der), cert)
    assert done.returncode != 0
    assert cms.parse_verify(base64.b64encode(bytes(der))).verified is False
    # the gateway's case 14: the upload certificate, but another key signed
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged = _sign_with(BATCH, cert, other_key)
    assert cms.parse_verify(base64.b64encode(forged)).verified is False
    assert _openssl_verify(tmp_path, forged, cert).returncode != 0


def _sign_with(payload: bytes, cert: x509.Certificate, key) -> bytes:
    """A CMS whose SignerInfo names ``cert`` but whose signature is made by ``key``:
    sign with a throwaway certificate of ``key``, then swap the certificate in."""
    from asn1crypto import cms as acms
    from asn1crypto import x509 as ax509

    subject = cert.subject
    throwaway = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(cert.issuer)
        .public_key(key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    der = cms.sign(payload, throwaway, key)
    info = acms.ContentInfo.load(der)
    real = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    info["content"]["certificates"] = acms.CertificateSet(
        [acms.CertificateChoices({"certificate": real})]
    )
    return info.dump(force=True)


def test_detached_signature_and_rsa(tmp_path: Path, upload) -> None:
    key, cert = upload
    der = cms.sign(BATCH, cert, key, detached=True)
    (tmp_path / "content").write_bytes(BATCH)
    done = _openssl_verify(
        tmp_path, der, cert, "-content", str(tmp_path / "content"), "-out", "/dev/null"
    )
    assert done.returncode == 0, done.stderr
    assert cms.parse_verify(base64.b64encode(der), detached_content=BATCH).verified
    with pytest.raises(cms.CmsError, match="binary data"):
        cms.parse_verify(base64.b64encode(der))  # no content inside, none given
    # RSA, PKCS#1 v1.5 (dgc-lib's SHA256withRSA) and PSS both verify
    rkey = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "rsa upload")])
    rcert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(rkey.public_key()).serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
        .sign(rkey, hashes.SHA256())
    )  # fmt: skip
    assert cms.parse_verify(cms.sign_b64(BATCH, rcert, rkey)).verified
    pss = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(BATCH)
        .add_signer(
            rcert,
            rkey,
            hashes.SHA256(),
            rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
        )
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    assert cms.parse_verify(base64.b64encode(pss)).verified


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not base64 at all!", cms.INVALID_BASE64),
        (base64.b64encode(b"\x30\x03\x02\x01\x01"), cms.INVALID_CMS),
        (b"Zm9v\nYmFy", cms.INVALID_BASE64),  # Java's basic decoder refuses line breaks
    ],
)
def test_parse_failures_carry_the_gateway_messages(body: bytes, message: str) -> None:
    with pytest.raises(cms.CmsError) as err:
        cms.parse_verify(body)
    assert str(err.value) == message


def test_two_certificates_are_refused(upload) -> None:
    key, cert = upload
    _k2, other = make_gateway_cert("SE", "auth", NOW)
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(BATCH)
        .add_signer(cert, key, hashes.SHA256())
        .add_certificate(other)
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    with pytest.raises(cms.CmsError, match="exactly one X509"):
        cms.parse_verify(base64.b64encode(der))


def test_init_dev_makes_the_gateway_certificates(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    kid = init_dev_keys(d, country="SE")
    g = d / GATEWAY_DIR
    upload = x509.load_pem_x509_certificate((g / UPLOAD_FILE).read_bytes())
    auth = x509.load_pem_x509_certificate((g / AUTH_FILE).read_bytes())
    for cert in (upload, auth):
        c = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COUNTRY_NAME)
        assert [a.value for a in c] == ["SE"]
    eku = auth.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    for name in (UPLOAD_KEY_FILE, AUTH_KEY_FILE):
        assert stat.S_IMODE((g / name).stat().st_mode) == 0o600
    # kept on a second call (and the DSC's kid with them), replaced with force
    assert init_dev_keys(d) == kid
    assert (g / UPLOAD_FILE).read_bytes() == upload.public_bytes(serialization.Encoding.PEM)
    init_dev_keys(d, force=True)
    assert (g / UPLOAD_FILE).read_bytes() != upload.public_bytes(serialization.Encoding.PEM)
    # an older key folder without them gets them on the next init-dev, its DSC kept
    shutil.rmtree(g)
    kid2 = init_dev_keys(d)
    assert (g / AUTH_FILE).is_file() and kid2 != kid  # (force above made a new DSC)
    assert init_dev_keys(d) == kid2
    # the upload key signs a batch that openssl verifies against the upload certificate
    ukey = serialization.load_pem_private_key((g / UPLOAD_KEY_FILE).read_bytes(), None)
    upload = x509.load_pem_x509_certificate((g / UPLOAD_FILE).read_bytes())
    done = _openssl_verify(tmp_path, cms.sign(BATCH, upload, ukey), upload)
    assert done.returncode == 0 and done.stdout == BATCH


def test_read_batches_checks_each_cms(tmp_path: Path, upload) -> None:
    key, cert = upload
    (tmp_path / "b1.cms").write_text(cms.sign_b64(BATCH, cert, key))
    (tmp_path / "b1.json").write_text("ignored: the .cms of the same name is read")
    assert read_batches(tmp_path) == set(e["hash"] for e in json.loads(BATCH)["entries"])
    other = batch_json(
        "SE", "2031-01-01T00:00:00Z", "UNKNOWN_KID", "UCI", ["DAwMDAwMDAwMDAwMDAwMDA=="]
    )
    forged = _sign_with(other, cert, ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "b2.cms").write_bytes(base64.b64encode(forged))
    with pytest.raises(RevocationError, match=r"b2\.cms.*does not verify"):
        read_batches(tmp_path)


def test_detached_repack_of_an_encapsulated_message(tmp_path: Path, upload) -> None:
    """What the gateway keeps of a DSC upload: the same signature without the content;
    openssl verifies it over the content given beside it."""
    key, cert = upload
    body = cms.sign_b64(BATCH, cert, key)
    repacked = cms.detached(body)
    assert cms.parse_verify(repacked, detached_content=BATCH).verified
    assert not cms.parse_verify(repacked, detached_content=BATCH + b" ").verified
    (tmp_path / "content").write_bytes(BATCH)
    done = _openssl_verify(
        tmp_path, base64.b64decode(repacked), cert, "-content", str(tmp_path / "content"),
        "-out", "/dev/null",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with pytest.raises(cms.CmsError):
        cms.detached("not base64!")
