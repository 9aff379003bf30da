"""How the simulator authenticates, as the gateway does: the load balancer's mutual TLS
(refused in the handshake without a certificate the bundle trusts; the authentication
headers derived from the real peer certificate, never taken from the client), then the
gateway's CertificateAuthenticationFilter on those headers (its CertAuthFilterTest cases,
sent as headers straight to the app, as the Java tests do with MockMvc)."""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.parse

import httpx
import pytest

from jobs.gateway.simulator import (
    AUTHENTICATION,
    READER,
    GatewayStore,
    TrustedParty,
    create_app,
    running_gateway,
)
from tests.jobs.gateway.support import Country

SINCE = {"If-Modified-Since": "2021-06-01T00:00:00Z"}


@pytest.fixture
def eu(tmp_path):
    return Country.make("EU", tmp_path)


class _AsgiClient:
    """Requests straight to the ASGI app (no TLS, no load balancer): the filter alone."""

    def __init__(self, app) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                return await c.get(path, headers=headers)

        return asyncio.run(call())


@pytest.fixture
def app_client(tmp_path, eu):
    store = GatewayStore(tmp_path / "gw.db")
    for party in eu.parties():
        store.add_party(party)
    yield _AsgiClient(create_app(store))
    store.close()


def _get(client, thumbprint: str | None, dn: str | None):
    headers = dict(SINCE)
    if thumbprint is not None:
        headers["X-SSL-Client-SHA256"] = thumbprint
    if dn is not None:
        headers["X-SSL-Client-DN"] = dn
    return client.get("/revocation-list", headers=headers)


def test_filter_missing_headers_and_unknown_certificate(app_client, eu) -> None:
    for thumbprint, dn in ((None, "C=EU"), (eu.auth_hash, None), (None, None)):
        r = _get(app_client, thumbprint, dn)
        assert r.status_code == 401 and r.json()["code"] == "0x400"
    r = _get(app_client, "randomString", "C=EU")
    assert r.status_code == 401 and r.json()["code"] == "0x402"
    assert _get(app_client, eu.auth_hash, "C=EU").status_code == 204  # nothing stored yet


def test_filter_decodes_dn_and_normalises_the_thumbprint(app_client, eu) -> None:
    dn = "ST%3dSome-State%2c%20C%3dEU%2c%20O%3dInternet%20Widgits%20Pty%20Ltd%2c%20CN%3dTest%20Cert"
    assert _get(app_client, eu.auth_hash, dn).status_code == 204
    b64 = base64.b64encode(bytes.fromhex(eu.auth_hash)).decode()
    assert _get(app_client, b64, "C=EU").status_code == 204
    assert _get(app_client, urllib.parse.quote(b64, safe=""), "C=EU").status_code == 204


def test_filter_dn_without_country_malformed_and_duplicated(app_client, eu) -> None:
    r = _get(app_client, eu.auth_hash, "O=Test Firma GmbH,CN=bevis")
    assert r.status_code == 400 and r.json()["code"] == "0x401"
    assert _get(app_client, eu.auth_hash, "O=Test Firma GmbH,C=EU,U=,TR,TT=43").status_code == 204
    assert _get(app_client, eu.auth_hash, "O=Test Firma GmbH,C=EU,C=DE").status_code == 204
    assert _get(app_client, eu.auth_hash, "O=Test Firma GmbH,C=DE,C=EU").status_code == 401


def test_the_country_comes_from_the_dn_and_must_match_the_registration(app_client, eu) -> None:
    r = _get(app_client, eu.auth_hash, "C=XX")
    assert r.status_code == 401 and r.json()["code"] == "0x402"


# --- over real TLS: the load balancer's part ----------------------------------------------------


def _client(gw, cert_files: tuple[str, str] | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(gw.ca))
    if cert_files:
        ctx.load_cert_chain(*cert_files)
    return httpx.Client(base_url=gw.url, verify=ctx, timeout=10)


def test_tls_refuses_clients_without_a_trusted_certificate(tmp_path, eu) -> None:
    stranger = Country.make("YY", tmp_path / "stranger")  # not in the bundle
    with running_gateway(tmp_path / "sim", eu.parties()) as gw:
        with _client(gw, None) as c, pytest.raises(httpx.TransportError):
            c.get("/revocation-list", headers=SINCE)
        files = (str(stranger.files["auth_cert"]), str(stranger.files["auth_key"]))
        with _client(gw, files) as c, pytest.raises(httpx.TransportError):
            c.get("/revocation-list", headers=SINCE)
        with eu.client(gw.url, gw.ca) as c:
            assert c.get("/revocation-list", headers=SINCE).status_code == 204


def test_tls_headers_come_from_the_peer_certificate(tmp_path, eu) -> None:
    """EU's TLS certificate holds no role; XX's holds READER. EU sending XX's thumbprint and
    DN gets nowhere: the simulator replaced them with its own certificate's."""
    xx = Country.make("XX", tmp_path / "xx")
    parties = eu.parties(roles=frozenset()) + xx.parties(roles=frozenset({READER}))
    with running_gateway(tmp_path / "sim", parties) as gw:
        spoofed = {**SINCE, "X-SSL-Client-SHA256": xx.auth_hash, "X-SSL-Client-DN": "C=XX"}
        with eu.client(gw.url, gw.ca) as c:
            r = c.get("/revocation-list", headers=spoofed)
        assert r.status_code == 403 and r.json()["code"] == "0x403"
        with xx.client(gw.url, gw.ca) as c:
            assert c.get("/revocation-list", headers=SINCE).status_code == 204


def test_tls_certificate_in_the_bundle_but_registered_for_another_country(tmp_path, eu) -> None:
    """The bundle trusts it (the handshake passes), but (thumbprint, C of its DN) is not an
    AUTHENTICATION trusted party: 401 0x402."""
    yy = Country.make("YY", tmp_path / "yy")
    assert yy.auth is not None
    parties = [*eu.parties(), TrustedParty("ZZ", AUTHENTICATION, yy.auth, frozenset({READER}))]
    with running_gateway(tmp_path / "sim", parties) as gw, yy.client(gw.url, gw.ca) as c:
        r = c.get("/revocation-list", headers=SINCE)
    assert r.status_code == 401 and r.json()["code"] == "0x402"
