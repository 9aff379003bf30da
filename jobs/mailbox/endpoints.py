"""Where bevis may send a person's data: the configured operator endpoints, and the rule
for plain HTTP.

A reachability answer names an operator and its service address. bevis sends to an
operator only when both are configured: the operator by name (``mailbox_operators``) and
the address with exactly the configured scheme, host and port. The message then goes to the
*configured* base URL, never to an address taken from the answer, so a look-up service of
someone else's choosing cannot steer identity numbers and certificates anywhere.

Plain ``http://`` is allowed only to a loopback address (the simulator on this machine), or
to a host listed in ``mailbox_plain_http_hosts`` (a simulator on a private container
network); anything else must be ``https://``. The check runs when the client is configured,
before any request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from jobs.errors import ConfigurationInvalid

# The simulator's operators (jobs.mailbox.simulator serves them under /operators/<name>).
SIMULATOR_OPERATORS = ("kivra", "minmyndighetspost", "eboks", "billo")
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the port filled in; None when it is not an absolute
    http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except (ValueError, AttributeError):
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str, plain_http_hosts: Iterable[str] = ()) -> str:
    """``url`` without a trailing slash, or ConfigurationInvalid: not http(s), or plain
    http to a host that is neither loopback nor listed."""
    o = origin(url)
    if o is None:
        raise ConfigurationInvalid(f"{what}: {url!r} is not an http(s) URL")
    scheme, host, _ = o
    allowed = {h.lower() for h in plain_http_hosts}
    if scheme == "http" and not is_loopback(host) and host not in allowed:
        raise ConfigurationInvalid(
            f"{what}: plain http:// to {host} is refused; use https:// (plain http only to "
            "a loopback address, the simulator)"
        )
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class OperatorEndpoints:
    """The configured operators: name → base URL (checked by :func:`check_url`)."""

    urls: Mapping[str, str]

    @classmethod
    def configured(
        cls, operators: Mapping[str, str], plain_http_hosts: Iterable[str] = ()
    ) -> OperatorEndpoints:
        hosts = tuple(plain_http_hosts)
        return cls(
            {
                name: check_url(url, f"mailbox operator {name!r}", hosts)
                for name, url in operators.items()
            }
        )

    @classmethod
    def of_simulator(cls, base_url: str) -> OperatorEndpoints:
        """The simulator's operators under ``base_url`` (the default for a loopback FaR)."""
        base = base_url.rstrip("/")
        return cls({name: f"{base}/operators/{name}" for name in SIMULATOR_OPERATORS})

    def resolve(self, operator: str | None, service_address: str | None) -> str | None:
        """The configured base URL of ``operator`` when the answer's ``service_address``
        has exactly its scheme, host and port; None: refused (``operator_unknown``)."""
        if not operator or not service_address:
            return None
        url = self.urls.get(operator)
        if url is None:
            return None
        answered = origin(service_address)
        return url if answered is not None and answered == origin(url) else None

    def allows(self, url: str) -> bool:
        """Is ``url`` under one of the configured base URLs (same origin and path prefix)?"""
        o = origin(url)
        if o is None:
            return False
        path = urlsplit(url).path
        for base in self.urls.values():
            if origin(base) == o:
                prefix = urlsplit(base).path.rstrip("/")
                if path == prefix or path.startswith(prefix + "/"):
                    return True
        return False
