"""Keys: development CSCA/DSC, the PEM file provider, trust loading, and the PKCS#11
provider against a REAL SoftHSM2 token initialised here with softhsm2-util."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jobs.settings import get_settings
from signing.hcert import issue, sign_many, validity
from signing.keys import (
    EKU_OIDS,
    SigningKeyError,
    file_signer,
    init_dev_keys,
    kid_of,
    load_signer,
    load_trust,
    pkcs11_signer,
)
from signing.verify import verify
from tests.conftest import REPO

SAMPLE = json.loads((REPO / "samples" / "payloads.jsonl").read_text().splitlines()[0])
SOFTHSM_UTIL = shutil.which("softhsm2-util") or "/usr/bin/softhsm2-util"
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN, PIN, SO_PIN = "bevis-test", "4711", "87654321"


def test_dev_keys_are_a_proper_csca_dsc_pair(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    kid = init_dev_keys(d)
    csca = x509.load_pem_x509_certificate((d / "csca.pem").read_bytes())
    dsc = x509.load_pem_x509_certificate((d / "dsc.pem").read_bytes())
    assert kid == kid_of(dsc) and len(kid) == 8
    for name in ("dsc.key", "csca.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert isinstance(dsc.public_key(), ec.EllipticCurvePublicKey)
    assert dsc.public_key().curve.name == "secp256r1"
    dsc.verify_directly_issued_by(csca)
    ski = csca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = dsc.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert dsc.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert dsc.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert csca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    ekus = {
        o.dotted_string for o in dsc.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    }
    assert ekus == {oid for pair in EKU_OIDS.values() for oid in pair}
    assert "1.3.6.1.4.1.1847.2021.1.2" in ekus and "1.3.6.1.4.1.0.1847.2021.1.2" in ekus
    life = dsc.not_valid_after_utc - dsc.not_valid_before_utc
    assert 365 < life.days <= 800
    assert csca.not_valid_after_utc >= dsc.not_valid_after_utc
    # idempotent: a second call keeps the keys
    assert init_dev_keys(d) == kid
    assert init_dev_keys(d, force=True) != kid


def test_file_provider_with_passphrase(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    init_dev_keys(d, passphrase="correct horse")
    assert b"ENCRYPTED" in (d / "dsc.key").read_bytes()
    with pytest.raises(SigningKeyError, match="passphrase"):
        file_signer(d)
    with pytest.raises(SigningKeyError, match="passphrase"):
        file_signer(d, "wrong")
    signer = load_signer(get_settings(key_dir=d, key_passphrase="correct horse").key_source())
    assert signer.alg == "ES256" and signer.provider == "file"
    iat, exp = validity(signer, int(time.time()), 10)
    assert verify(issue(SAMPLE, signer, iat=iat, exp=exp), trust=[signer.dsc]).valid


def test_file_provider_explains_missing_or_mismatched_keys(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="init-dev"):
        file_signer(tmp_path / "nothing")
    a, b = tmp_path / "a", tmp_path / "b"
    init_dev_keys(a)
    init_dev_keys(b)
    shutil.copy(b / "dsc.pem", a / "dsc.pem")
    with pytest.raises(SigningKeyError, match="does not belong"):
        file_signer(a)


def test_load_trust_reads_files_folders_and_der(tmp_path: Path) -> None:
    init_dev_keys(tmp_path / "k1")
    init_dev_keys(tmp_path / "k2")
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(tmp_path / "k1" / "dsc.pem", trust / "one.pem")
    dsc2 = x509.load_pem_x509_certificate((tmp_path / "k2" / "dsc.pem").read_bytes())
    (trust / "two.der").write_bytes(dsc2.public_bytes(serialization.Encoding.DER))
    (trust / "notes.txt").write_text("ignored")
    assert len(load_trust(trust)) == 2
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        (tmp_path / "k1" / "dsc.pem").read_bytes() + (tmp_path / "k2" / "dsc.pem").read_bytes()
    )
    assert [kid_of(c) for c in load_trust(bundle)] == [
        kid_of(x509.load_pem_x509_certificate((tmp_path / k / "dsc.pem").read_bytes()))
        for k in ("k1", "k2")
    ]
    with pytest.raises(FileNotFoundError):
        load_trust(tmp_path / "missing")


# --- PKCS#11 against a real SoftHSM2 token ------------------------------------------------


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory):
    """A fresh SoftHSM2 token in a temporary folder (SOFTHSM2_CONF for this session)."""
    if not Path(SOFTHSM_MODULE).exists() or not Path(SOFTHSM_UTIL).exists():
        pytest.skip("softhsm2 is not installed (apt-get install softhsm2)")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [
            SOFTHSM_UTIL,
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ],
        check=True,
        capture_output=True,
    )
    yield root
    mp.undo()


def _hsm_settings(key_dir: Path, label: str = "dsc"):
    return get_settings(
        key_provider="pkcs11",
        key_dir=key_dir,
        pkcs11_module=SOFTHSM_MODULE,
        pkcs11_token_label=TOKEN,
        pkcs11_pin=PIN,
        pkcs11_key_label=label,
    )


@pytest.mark.softhsm
def test_pkcs11_key_generated_on_token_signs_verifiable_hcerts(
    softhsm: Path, tmp_path: Path
) -> None:
    import pkcs11

    s = _hsm_settings(tmp_path / "keys")
    kid = init_dev_keys(tmp_path / "keys", source=s.key_source())
    assert not (tmp_path / "keys" / "dsc.key").exists()  # the private key never left the token
    signer = load_signer(s.key_source())
    assert signer.provider == "pkcs11" and signer.kid == kid and signer.alg == "ES256"
    key = signer._session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label="dsc")
    assert key[pkcs11.Attribute.SENSITIVE] and not key[pkcs11.Attribute.EXTRACTABLE]
    iat, exp = validity(signer, int(time.time()), 30)
    v = verify(issue(SAMPLE, signer, iat=iat, exp=exp), trust=[signer.dsc])
    assert v.valid, v.reasons
    assert v.payload == SAMPLE


@pytest.mark.softhsm
@pytest.mark.slow
def test_pkcs11_sign_many_each_worker_opens_its_own_session(softhsm: Path, tmp_path: Path) -> None:
    s = _hsm_settings(tmp_path / "keys", label="pool")
    init_dev_keys(tmp_path / "keys", source=s.key_source())
    dsc = x509.load_pem_x509_certificate((tmp_path / "keys" / "dsc.pem").read_bytes())
    iat = int(time.time())
    hc1s = sign_many(
        [SAMPLE] * 600, iat=iat, exp=iat + 86400, keys=s.key_source(), workers=2, chunk_size=150
    )
    assert len(hc1s) == 600
    for h in hc1s[::149]:
        v = verify(h, trust=[dsc])
        assert v.valid, v.reasons


@pytest.mark.softhsm
def test_pkcs11_imported_pem_key_and_clear_errors(softhsm: Path, tmp_path: Path) -> None:
    d = tmp_path / "file-keys"
    init_dev_keys(d)
    subprocess.run(
        [
            SOFTHSM_UTIL,
            "--import",
            str(d / "dsc.key"),
            "--token",
            TOKEN,
            "--label",
            "imported",
            "--id",
            "0a0b",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
        env=os.environ,
    )
    signer = pkcs11_signer(SOFTHSM_MODULE, TOKEN, PIN, "imported", key_dir=d)
    file_kid = file_signer(d).kid
    assert signer.kid == file_kid
    iat, exp = validity(signer, int(time.time()), 1)
    assert verify(issue(SAMPLE, signer, iat=iat, exp=exp), trust=load_trust(d / "dsc.pem")).valid
    with pytest.raises(SigningKeyError, match="no private key labelled"):
        pkcs11_signer(SOFTHSM_MODULE, TOKEN, PIN, "absent", key_dir=d)
    with pytest.raises(SigningKeyError, match="PKCS#11 token 'no-such-token'"):
        pkcs11_signer(SOFTHSM_MODULE, "no-such-token", PIN, "imported", key_dir=d)
