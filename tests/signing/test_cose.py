"""COSE_Sign1: our hot-path implementation against pycose, the independent one, in both
directions, for ES256 and PS256; header placement and tagging variants."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import Es256, Ps256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key, RSAKey
from pycose.messages import Sign1Message

from signing import cose


@dataclass
class RawKeySigner:
    """A cose.RawSigner over a cryptography private key (what signing.keys does)."""

    key: object
    alg: str
    kid: bytes = b"\x01\x02\x03\x04\x05\x06\x07\x08"

    def sign(self, data: bytes) -> bytes:
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return self.key.sign(data, pss, hashes.SHA256())


@pytest.fixture(scope="module", params=["ES256", "PS256"])
def signer(request) -> RawKeySigner:
    if request.param == "ES256":
        return RawKeySigner(ec.generate_private_key(ec.SECP256R1()), "ES256")
    return RawKeySigner(rsa.generate_private_key(65537, 2048), "PS256")


def pycose_key(signer: RawKeySigner):
    cls = EC2Key if signer.alg == "ES256" else RSAKey
    return cls._from_cryptography_key(signer.key)


def pycose_decode(data: bytes) -> Sign1Message:
    """pycose's Sign1Message.decode fails on tagged messages with cbor2 6.x (tag contents
    come back immutable: tuple + frozendict): strip the tag and thaw the array first."""
    obj = cbor2.loads(data)
    arr = obj.value if isinstance(obj, cbor2.CBORTag) else obj
    return Sign1Message.from_cose_obj([arr[0], dict(arr[1]), arr[2], arr[3]], True)


PAYLOAD = cbor2.dumps({1: "SE", 6: 1_700_000_000, 4: 1_731_536_000, -260: {1: {"ver": "1.3.3"}}})


def test_ours_verify_with_pycose(signer: RawKeySigner) -> None:
    data = cose.sign1(PAYLOAD, signer)
    assert data[:1] == b"\xd2"  # tag 18, no CWT tag 61
    msg = pycose_decode(data)
    assert msg.phdr[Algorithm] is (Es256 if signer.alg == "ES256" else Ps256)
    assert msg.phdr[KID] == signer.kid
    assert msg.payload == PAYLOAD
    msg.key = pycose_key(signer)
    assert msg.verify_signature()
    # and pycose notices tampering, so the check above can fail
    tampered = pycose_decode(data)
    tampered.payload = PAYLOAD + b"\x00"
    tampered.key = pycose_key(signer)
    assert not tampered.verify_signature()


@pytest.mark.parametrize("tagged", [True, False])
@pytest.mark.parametrize("kid_where", ["protected", "unprotected"])
def test_pycose_messages_verify_with_ours(
    signer: RawKeySigner, tagged: bool, kid_where: str
) -> None:
    alg = Es256 if signer.alg == "ES256" else Ps256
    phdr, uhdr = {Algorithm: alg}, {}
    (phdr if kid_where == "protected" else uhdr)[KID] = signer.kid
    msg = Sign1Message(phdr=phdr, uhdr=uhdr, payload=PAYLOAD)
    msg.key = pycose_key(signer)
    data = msg.encode(tag=tagged)
    decoded = cose.decode(data)
    assert decoded.tagged is tagged
    assert decoded.kid == signer.kid
    assert decoded.payload == PAYLOAD
    cose.verify_signature(decoded, signer.key.public_key())
    other = (
        ec.generate_private_key(ec.SECP256R1())
        if signer.alg == "ES256"
        else rsa.generate_private_key(65537, 2048)
    )
    with pytest.raises(InvalidSignature):
        cose.verify_signature(decoded, other.public_key())


def test_wrong_key_type_and_unknown_alg_fail_cleanly(signer: RawKeySigner) -> None:
    msg = cose.decode(cose.sign1(PAYLOAD, signer))
    wrong = (
        rsa.generate_private_key(65537, 2048)
        if signer.alg == "ES256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    with pytest.raises(InvalidSignature):
        cose.verify_signature(msg, wrong.public_key())
    odd = cose.Sign1(cbor2.dumps({1: -8}), {1: -8}, {}, msg.payload, msg.signature)
    with pytest.raises(InvalidSignature, match="unsupported"):
        cose.verify_signature(odd, signer.key.public_key())


def test_cwt_tag_61_wrapping_is_read() -> None:
    s = RawKeySigner(ec.generate_private_key(ec.SECP256R1()), "ES256")
    inner = cbor2.loads(cose.sign1(PAYLOAD, s))
    wrapped = cbor2.dumps(cbor2.CBORTag(61, cbor2.CBORTag(18, list(inner.value))))
    msg = cose.decode(wrapped)
    cose.verify_signature(msg, s.key.public_key())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_hostile_bytes_raise_only_cose_error(data: bytes) -> None:
    with contextlib.suppress(cose.CoseError):
        cose.decode(data)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers() | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(cbor_values, st.booleans())
def test_hostile_cbor_structures_raise_only_cose_error(value, tag: bool) -> None:
    data = cbor2.dumps(cbor2.CBORTag(18, value) if tag else value)
    try:
        msg = cose.decode(data)
    except cose.CoseError:
        return
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(InvalidSignature):
        cose.verify_signature(msg, key)


def test_dev_certificate_and_cose_agree_on_kid(tmp_path) -> None:
    from signing.keys import file_signer, init_dev_keys, kid_of

    kid = init_dev_keys(tmp_path / "k", now=dt.datetime.now(dt.UTC))
    signer = file_signer(tmp_path / "k")
    assert (
        signer.kid
        == kid
        == kid_of(x509.load_pem_x509_certificate((tmp_path / "k" / "dsc.pem").read_bytes()))
    )
    msg = pycose_decode(cose.sign1(PAYLOAD, signer))
    msg.key = EC2Key._from_cryptography_key(signer.dsc.public_key())
    assert msg.phdr[KID] == kid
    assert msg.verify_signature()


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_hand_assembled_cbor_is_byte_identical_to_cbor2(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    protected = cbor2.dumps({1: -7, 4: b"12345678"})
    assert cose.sig_structure(protected, payload) == cbor2.dumps(
        ["Signature1", protected, b"", payload]
    )
    sig = b"\x01" * 64
    assert cose.encode_sign1(protected, payload, sig) == cbor2.dumps(
        cbor2.CBORTag(18, [protected, {}, payload, sig])
    )
