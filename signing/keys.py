"""Signing keys and trust material: the DSC signer (PEM file or PKCS#11 token), the
development CSCA/DSC pair, and trust lists for verification.

Real issuers sign in an HSM, so the signer is an interface with two providers: a PEM file
(optionally passphrase-protected) for laptops and tests, and a PKCS#11 token (SoftHSM2 in
tests, a hardware HSM in production) where the private key never leaves the token. The
DSC certificate lives next to the key as ``dsc.pem`` in the key folder (or, for a token, as
a certificate object with the key's label).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

# Extended key usage OIDs that restrict a DSC to certificate types. Both arcs are in use:
# the specification's 1.3.6.1.4.1.1847.2021.1.x and the 1.3.6.1.4.1.0.1847.2021.1.x that
# several member states issued.
EKU_OIDS: dict[str, tuple[str, str]] = {
    "t": ("1.3.6.1.4.1.1847.2021.1.1", "1.3.6.1.4.1.0.1847.2021.1.1"),
    "v": ("1.3.6.1.4.1.1847.2021.1.2", "1.3.6.1.4.1.0.1847.2021.1.2"),
    "r": ("1.3.6.1.4.1.1847.2021.1.3", "1.3.6.1.4.1.0.1847.2021.1.3"),
}
HCERT_EKU_OIDS = frozenset(oid for pair in EKU_OIDS.values() for oid in pair)

DSC_FILE, DSC_KEY_FILE, CSCA_FILE, CSCA_KEY_FILE = "dsc.pem", "dsc.key", "csca.pem", "csca.key"
# The country's trusted parties at the EU gateway, in <key folder>/gateway/: the upload
# certificate signs the CMS packages, the TLS authentication certificate is the mTLS client.
GATEWAY_DIR = "gateway"
UPLOAD_FILE, UPLOAD_KEY_FILE, AUTH_FILE, AUTH_KEY_FILE = (
    "upload.pem",
    "upload.key",
    "auth.pem",
    "auth.key",
)


class SigningKeyError(Exception):
    """Signing material is missing or unusable; the message says what to do."""


@lru_cache(maxsize=4096)
def kid_of(cert: x509.Certificate) -> bytes:
    """The HCERT key identifier: the first 8 bytes of SHA-256 over the DSC's DER (cached:
    verifiers pass the same trust list for every certificate)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()[:8]


def _alg_for(public_key: Any) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name != "secp256r1":
            raise SigningKeyError(f"HCERT signs ES256 with P-256, not {public_key.curve.name}")
        return "ES256"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "PS256"
    raise SigningKeyError(f"unsupported DSC key type {type(public_key).__name__}")


def _utc(cert: x509.Certificate, attr: str) -> dt.datetime:
    return getattr(cert, f"{attr}_utc")


@dataclass
class Signer:
    """A DSC and the means to sign with its private key (``sign`` returns the raw COSE
    signature: r‖s for ES256, the PSS signature for PS256)."""

    dsc: x509.Certificate
    alg: str = ""
    kid: bytes = b""
    provider: str = "file"
    _sign: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.alg = self.alg or _alg_for(self.dsc.public_key())
        self.kid = self.kid or kid_of(self.dsc)
        self.not_before = int(_utc(self.dsc, "not_valid_before").timestamp())
        self.not_after = int(_utc(self.dsc, "not_valid_after").timestamp())
        from signing.cose import protected_header

        self.protected = protected_header(self.alg, self.kid)

    def sign(self, data: bytes) -> bytes:
        return self._sign(data)


def _file_sign(private_key: Any, alg: str):
    if alg == "ES256":
        ecdsa = ec.ECDSA(hashes.SHA256())

        def sign(data: bytes) -> bytes:
            r, s = decode_dss_signature(private_key.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    return lambda data: private_key.sign(data, pss, hashes.SHA256())


def file_signer(key_dir: Path, passphrase: str | None = None) -> Signer:
    """Signer from ``dsc.key`` (PEM, PKCS#8 or SEC1, optionally encrypted) and ``dsc.pem``."""
    key_path, dsc_path = key_dir / DSC_KEY_FILE, key_dir / DSC_FILE
    for p in (key_path, dsc_path):
        if not p.is_file():
            raise SigningKeyError(f"{p} not found; run 'bevis keys init-dev --dir {key_dir}'")
    dsc = x509.load_pem_x509_certificate(dsc_path.read_bytes())
    try:
        key = serialization.load_pem_private_key(
            key_path.read_bytes(), passphrase.encode() if passphrase else None
        )
    except (TypeError, ValueError) as exc:
        raise SigningKeyError(
            f"cannot open {key_path}: wrong or missing passphrase (BEVIS_KEY_PASSPHRASE)?"
        ) from exc
    if key.public_key().public_numbers() != dsc.public_key().public_numbers():  # type: ignore[union-attr]
        raise SigningKeyError(f"{key_path} does not belong to the DSC in {dsc_path}")
    alg = _alg_for(dsc.public_key())
    return Signer(dsc=dsc, alg=alg, provider="file", _sign=_file_sign(key, alg))


_SESSIONS: dict[tuple[str, str], Any] = {}


def _pkcs11_session(module: str, token_label: str, pin: str):
    """One logged-in session per token and process. PKCS#11 login state belongs to the
    process: a second ``C_Login`` fails with UserAlreadyLoggedIn, so sessions are reused."""
    import pkcs11

    cached = _SESSIONS.get((module, token_label))
    if cached is not None:
        return cached
    try:
        lib = pkcs11.lib(module)
        token = lib.get_token(token_label=token_label)
        try:
            session = token.open(user_pin=pin, rw=True)
        except pkcs11.exceptions.UserAlreadyLoggedIn:
            session = token.open(rw=True)
    except pkcs11.exceptions.PKCS11Error as exc:
        raise SigningKeyError(
            f"PKCS#11 token {token_label!r} via {module}: {type(exc).__name__}"
        ) from exc
    except Exception as exc:  # missing module file, no such token
        raise SigningKeyError(f"PKCS#11 token {token_label!r} via {module}: {exc}") from exc
    _SESSIONS[(module, token_label)] = session
    return session


def _token_dsc(session: Any, label: str) -> x509.Certificate | None:
    import pkcs11

    for obj in session.get_objects(
        {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE, pkcs11.Attribute.LABEL: label}
    ):
        return x509.load_der_x509_certificate(obj[pkcs11.Attribute.VALUE])
    return None


def pkcs11_signer(
    module: str, token_label: str, pin: str, key_label: str, key_dir: Path | None = None
) -> Signer:
    """Signer whose private key stays on a PKCS#11 token. The DSC comes from the token
    (certificate object labelled like the key) or from ``dsc.pem`` in ``key_dir``."""
    import pkcs11
    from pkcs11 import MGF, Attribute, Mechanism, ObjectClass

    session = _pkcs11_session(module, token_label, pin)
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
    except pkcs11.exceptions.PKCS11Error as exc:
        raise SigningKeyError(
            f"no private key labelled {key_label!r} on token {token_label!r} ({type(exc).__name__})"
        ) from exc
    dsc = _token_dsc(session, key_label)
    if dsc is None and key_dir is not None and (key_dir / DSC_FILE).is_file():
        dsc = x509.load_pem_x509_certificate((key_dir / DSC_FILE).read_bytes())
    if dsc is None:
        raise SigningKeyError(
            f"no DSC for token key {key_label!r}: store it on the token or as {DSC_FILE} in the key folder"
        )
    alg = _alg_for(dsc.public_key())
    if alg == "ES256":
        if key[Attribute.KEY_TYPE] != pkcs11.KeyType.EC:
            raise SigningKeyError(f"token key {key_label!r} is not an EC key but the DSC is")

        def sign(data: bytes) -> bytes:
            # Hash here, sign the digest on the token: CKM_ECDSA is universally supported
            # and returns r‖s, which is exactly COSE's signature format.
            return key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)

    else:
        params = (Mechanism.SHA256, MGF.SHA256, 32)

        def sign(data: bytes) -> bytes:
            return key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS_PSS, mechanism_param=params)

    signer = Signer(dsc=dsc, alg=alg, provider="pkcs11", _sign=sign)
    signer._session = session  # type: ignore[attr-defined]  # keep the session alive
    return signer


@dataclass(frozen=True)
class KeySource:
    """Where the active signer comes from: a PEM key folder or a PKCS#11 token. Plain and
    picklable, so that each signing worker opens its own signer (a token session cannot
    cross a fork); the secrets stay out of its repr."""

    provider: Literal["file", "pkcs11"] = "file"
    key_dir: Path = Path("keys")
    passphrase: str | None = field(default=None, repr=False)
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    token_label: str = "bevis"
    pin: str = field(default="", repr=False)
    key_label: str = "dsc"


def load_signer(source: KeySource) -> Signer:
    """The active signer of ``source`` (``provider`` file | pkcs11)."""
    if source.provider == "pkcs11":
        return pkcs11_signer(
            source.pkcs11_module,
            source.token_label,
            source.pin,
            source.key_label,
            key_dir=source.key_dir,
        )
    return file_signer(source.key_dir, source.passphrase)


# --- development keys -------------------------------------------------------------------


def _name(country: str, cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bevis development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_csca(country: str, now: dt.datetime, days: int = 1461):
    """A self-signed development CSCA (EC P-256), valid from yesterday for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(country, f"bevis dev CSCA {country}")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_dsc(
    csca_key: Any,
    csca: x509.Certificate,
    public_key: Any,
    country: str,
    now: dt.datetime,
    days: int = 730,
    types: str = "vtr",
) -> x509.Certificate:
    """A DSC for ``public_key`` signed by the CSCA, with AKI/SKI and the HCERT EKUs of
    ``types`` (both OID arcs). Validity covers a year of signing plus certificate life."""
    ekus = [x509.ObjectIdentifier(oid) for t in types for oid in EKU_OIDS[t]]
    return (
        x509.CertificateBuilder()
        .subject_name(_name(country, f"bevis dev DSC {country}"))
        .issuer_name(csca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                csca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .sign(csca_key, hashes.SHA256())
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (0600 from the first byte on)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def init_dev_keys(
    directory: Path,
    *,
    country: str = "SE",
    passphrase: str | None = None,
    force: bool = False,
    source: KeySource | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """Make a development CSCA and DSC in ``directory`` and return the DSC's kid; also the
    gateway's upload and TLS authentication certificates in ``directory/gateway``.

    Idempotent: existing keys are kept (their kid returned) unless ``force``. With
    ``source.provider == "pkcs11"`` the DSC key pair is generated ON the token
    (non-extractable) and only the certificates are written here."""
    directory = Path(directory)
    if not directory.exists():
        directory.mkdir(parents=True)
        os.chmod(directory, 0o700)  # a new key folder is private; key files are 0600 anyway
    dsc_path = directory / DSC_FILE
    pkcs11 = source is not None and source.provider == "pkcs11"
    if dsc_path.is_file() and not force:
        existing = x509.load_pem_x509_certificate(dsc_path.read_bytes())
        if pkcs11 or (directory / DSC_KEY_FILE).is_file():
            init_gateway_certs(directory, country=country, passphrase=passphrase, now=now)
            return kid_of(existing)
    now = now or dt.datetime.now(dt.UTC)
    csca_key, csca = make_csca(country, now)
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    pem_private = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
    _write_private(directory / CSCA_KEY_FILE, csca_key.private_bytes(*pem_private))
    _write_public(directory / CSCA_FILE, csca.public_bytes(serialization.Encoding.PEM))
    if pkcs11:
        assert source is not None
        public_key = _pkcs11_generate(source)
    else:
        dsc_key = ec.generate_private_key(ec.SECP256R1())
        public_key = dsc_key.public_key()
        _write_private(directory / DSC_KEY_FILE, dsc_key.private_bytes(*pem_private))
    dsc = make_dsc(csca_key, csca, public_key, country, now)
    _write_public(dsc_path, dsc.public_bytes(serialization.Encoding.PEM))
    init_gateway_certs(directory, country=country, passphrase=passphrase, force=True, now=now)
    return kid_of(dsc)


def make_gateway_cert(
    country: str, role: Literal["upload", "auth"], now: dt.datetime, days: int = 730
):
    """A self-signed development trusted-party certificate for the EU gateway (EC P-256):
    ``upload`` signs CMS packages, ``auth`` is the TLS client (EKU clientAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(country, f"bevis dev {'upload' if role == 'upload' else 'TLS auth'} {country}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if role == "auth":
        eku = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])
        builder = builder.add_extension(eku, critical=False)
    return key, builder.sign(key, hashes.SHA256())


def init_gateway_certs(
    directory: Path,
    *,
    country: str = "SE",
    passphrase: str | None = None,
    force: bool = False,
    now: dt.datetime | None = None,
) -> Path:
    """Make the development upload and TLS authentication certificates (and keys, 0600) in
    ``directory/gateway``; existing ones are kept unless ``force``. Returns that folder."""
    folder = Path(directory) / GATEWAY_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.UTC)
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    for role, cert_file, key_file in (
        ("upload", UPLOAD_FILE, UPLOAD_KEY_FILE),
        ("auth", AUTH_FILE, AUTH_KEY_FILE),
    ):
        if not force and (folder / cert_file).is_file() and (folder / key_file).is_file():
            continue
        key, cert = make_gateway_cert(country, role, now)  # type: ignore[arg-type]
        pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        _write_private(folder / key_file, key.private_bytes(*pem))
        _write_public(folder / cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return folder


def _pkcs11_generate(source: KeySource) -> Any:
    """Generate a P-256 key pair on the token (replacing one with the same label) and
    return its public key."""
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    label = source.key_label
    session = _pkcs11_session(source.pkcs11_module, source.token_label, source.pin)
    for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
        for obj in list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label})):
            obj.destroy()
    params = session.create_domain_parameters(
        KeyType.EC,
        {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
        local=True,
    )
    pub, _priv = params.generate_keypair(
        store=True,
        label=label,
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )
    from asn1crypto.core import OctetString

    point = OctetString.load(pub[Attribute.EC_POINT]).native
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def load_trust(path: Path | str) -> list[x509.Certificate]:
    """DSCs to trust: one PEM file (may hold several certificates) or a folder of PEM/DER
    files (``*.pem``, ``*.crt``, ``*.cer``, ``*.der``)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix.lower() in {".pem", ".crt", ".cer", ".der"}
        )
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"trust material {path} does not exist")
    certs: list[x509.Certificate] = []
    for f in files:
        data = f.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            certs.extend(x509.load_pem_x509_certificates(data))
        elif b"-----BEGIN" not in data:  # skip keys and other PEM objects
            try:
                certs.append(x509.load_der_x509_certificate(data))
            except ValueError as exc:
                raise ValueError(f"{f} is neither a PEM nor a DER certificate") from exc
    return certs


def dsc_pem(signer: Signer) -> str:
    return signer.dsc.public_bytes(serialization.Encoding.PEM).decode()
