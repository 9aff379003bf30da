"""The rule of where a person's data may go: configured operators at exactly their scheme,
host and port; plain http only to loopback."""

from __future__ import annotations

import pytest

from jobs.errors import ConfigurationInvalid
from jobs.mailbox.endpoints import OperatorEndpoints, check_url, is_loopback, origin


def test_origin_fills_in_default_ports_and_refuses_other_schemes() -> None:
    assert origin("https://Kivra.example.se/x") == ("https", "kivra.example.se", 443)
    assert origin("http://127.0.0.1/x") == ("http", "127.0.0.1", 80)
    assert origin("https://k.se:8443") == ("https", "k.se", 8443)
    assert origin("ftp://k.se") is None and origin("kivra") is None and origin("") is None
    assert origin("https://k.se:99999") is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.2", "mailbox", "localhost.evil.se"])
def test_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_plain_http_only_to_loopback_or_a_listed_host() -> None:
    assert check_url("http://127.0.0.1:8787/", "x") == "http://127.0.0.1:8787"
    assert check_url("https://far.example.se", "x") == "https://far.example.se"
    with pytest.raises(ConfigurationInvalid, match="plain http"):
        check_url("http://bevis-mailbox:8787", "x")
    assert check_url("http://bevis-mailbox:8787", "x", ["bevis-mailbox"])
    with pytest.raises(ConfigurationInvalid, match="not an http"):
        check_url("file:///etc/passwd", "x")


def test_resolve_needs_the_name_and_exactly_the_scheme_host_and_port() -> None:
    ops = OperatorEndpoints.configured({"kivra": "https://kivra.example.se/api/v1"})
    good = "https://kivra.example.se/anything"
    assert ops.resolve("kivra", good) == "https://kivra.example.se/api/v1"
    assert ops.resolve("kivra", "https://KIVRA.example.se:443/x") == ops.urls["kivra"]
    assert ops.resolve("eboks", good) is None  # not configured
    assert ops.resolve("kivra", "http://kivra.example.se/anything") is None  # scheme
    assert ops.resolve("kivra", "https://kivra.example.se:8443/x") is None  # port
    assert ops.resolve("kivra", "https://evil.example.se/x") is None  # host
    assert ops.resolve("kivra", "https://kivra.example.se.evil.se/x") is None
    assert ops.resolve("kivra", None) is None and ops.resolve(None, good) is None
    assert ops.allows("https://kivra.example.se/api/v1/deliverSecure")
    assert not ops.allows("https://kivra.example.se/api/v10/deliverSecure")
    assert not ops.allows("https://kivra.example.se/other")


def test_configured_operators_are_checked() -> None:
    with pytest.raises(ConfigurationInvalid, match="'kivra'"):
        OperatorEndpoints.configured({"kivra": "http://kivra.example.se"})
