"""Drill (issue 14, item 5): the operator channel is authenticated. The simulator serves
HTTPS with a certificate from a test CA and requires a client certificate (mutual TLS)
and a bearer token; HttpMailbox, configured with the CA bundle, the client certificate
and the token, delivers over the real TLS path. Without the client certificate, with
another CA or without the token it fails, and the certificates are DEFERRED (never
printed, never at the operator). Plain http:// to a host that is not loopback is refused
when the client is configured."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tests.jobs.mailbox.support import FAST, Pki, audit, ledger_rows, make_pki, operator_messages

TOKEN = "test-bearer-token-7f3a"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _operator_settings(pki: Pki, db: Path):
    """The operators' side: HTTPS, client certificates required, a bearer token."""
    from jobs.settings import get_settings

    return get_settings(
        simulator_tls_cert=pki.server_cert,
        simulator_tls_key=pki.server_key,
        simulator_client_ca=pki.ca,
        simulator_token=TOKEN,
        simulator_db=db,
        **FAST,
    )


def _admin(pki: Pki) -> dict:
    """httpx options for the drill's own audit calls to the TLS simulator."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return {"verify": ctx}


def _simulator_at(base: str) -> dict[str, str]:
    from jobs.mailbox.endpoints import SIMULATOR_OPERATORS

    return {op: f"{base}/operators/{op}" for op in SIMULATOR_OPERATORS}


@pytest.mark.parametrize("token_from", ["settings", "file"])
def test_https_mutual_tls_and_token_deliver(
    bevis_env: Path, tmp_path: Path, pki: Pki, token_from: str
) -> None:
    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    n = 16
    batch_id = synthetic_batch("tls-ok", n, get_settings(**FAST))
    token: dict = {"mailbox_token": TOKEN}
    if token_from == "file":
        (tmp_path / "token").write_text(TOKEN + "\n")
        token = {"mailbox_token_file": tmp_path / "token"}
    with running_simulator(_operator_settings(pki, tmp_path / "op.db")) as op:
        assert op.startswith("https://127.0.0.1:")
        s = get_settings(
            mailbox_url=op,  # FaR and the operators over TLS
            mailbox_operators=_simulator_at(op),
            mailbox_ca_bundle=pki.ca,
            mailbox_client_cert=pki.client_cert,
            mailbox_client_key=pki.client_key,
            **token,
            **FAST,
        )
        result = deliver_batch(batch_id, s)
        messages = operator_messages(op, **_admin(pki))
    assert result["pending"] == 0 and result["DIGITAL"] > 8
    assert result["DIGITAL"] == len(messages)
    outcomes = audit(batch_id, s.resolved_ledger_url(), messages)
    assert outcomes.get("DEFERRED", 0) == 0


@pytest.mark.parametrize("missing", ["client_cert", "right_ca", "token"])
def test_without_credentials_the_operator_refuses_and_we_defer(
    bevis_env: Path, tmp_path: Path, pki: Pki, missing: str
) -> None:
    """FaR answers (plain http on loopback, its service addresses at the TLS operator);
    the operator cannot be reached with incomplete credentials: nothing at the operator,
    nothing printed for those with a mailbox — DEFERRED."""
    from jobs.devtools.drill import synthetic_batch
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch

    n = 16
    batch_id = synthetic_batch(f"tls-{missing.replace('_', '')}", n, get_settings(**FAST))
    client = {
        "mailbox_ca_bundle": pki.other_ca if missing == "right_ca" else pki.ca,
        "mailbox_token": None if missing == "token" else TOKEN,
    }
    if missing != "client_cert":
        client |= {"mailbox_client_cert": pki.client_cert, "mailbox_client_key": pki.client_key}
    with running_simulator(_operator_settings(pki, tmp_path / "op.db")) as op:
        far_s = get_settings(
            simulator_operator_base_url=op, simulator_db=tmp_path / "far.db", **FAST
        )
        with running_simulator(far_s) as far:
            s = get_settings(mailbox_url=far, mailbox_operators=_simulator_at(op), **client, **FAST)
            result = deliver_batch(batch_id, s)
        messages = operator_messages(op, **_admin(pki))
    assert messages == {}
    url = s.resolved_ledger_url()
    certs, deliveries = ledger_rows(batch_id, url)
    unreachable = {d.uvci for d in deliveries if d.status.value == "UNREACHABLE"}
    assert result["DIGITAL"] == 0 and result["pending"] == 0
    assert result["DEFERRED"] == n - len(unreachable) > 0
    # A refused token (401) or server certificate (verification) is known to be ours; a
    # refused client certificate is not: in TLS 1.3 the server drops the connection after
    # the handshake, which the client cannot tell from a connection lost with the request
    # in flight — so it stays "maybe delivered" (and the status call fails the same way).
    expected = "delivery_unconfirmed" if missing == "client_cert" else "operator_auth_failed"
    assert {r for u, _, r in certs if u not in unreachable} == {expected}
    audit(batch_id, url, messages)


def test_far_over_tls_with_the_wrong_ca_sends_nothing(
    bevis_env: Path, tmp_path: Path, pki: Pki
) -> None:
    """The look-up itself fails TLS verification: nothing is known about the recipients,
    nothing is sent or printed; the task fails at once (a settings problem, not an
    outage) and the certificates stay pending for the rerun after the fix."""
    from jobs.devtools.drill import synthetic_batch
    from jobs.errors import ConfigurationInvalid
    from jobs.mailbox.simulator import running_simulator
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch, outcome_counts

    batch_id = synthetic_batch("tls-far", 8, get_settings(**FAST))
    with running_simulator(_operator_settings(pki, tmp_path / "op.db")) as op:
        s = get_settings(
            mailbox_url=op,
            mailbox_operators=_simulator_at(op),
            mailbox_ca_bundle=pki.other_ca,
            mailbox_client_cert=pki.client_cert,
            mailbox_client_key=pki.client_key,
            mailbox_token=TOKEN,
            **FAST,
        )
        with pytest.raises(ConfigurationInvalid, match="tls-far-b0001"):
            deliver_batch(batch_id, s)
        assert operator_messages(op, **_admin(pki)) == {}
    assert outcome_counts(batch_id, s)["pending"] == 8


@pytest.mark.parametrize(
    "setting",
    [
        {"mailbox_url": "http://far.example.se:8787"},
        {"mailbox_url": "http://10.1.2.3"},
        {"mailbox_operators": {"kivra": "http://kivra.example.se/operators/kivra"}},
    ],
    ids=["far-host", "far-private-ip", "operator-host"],
)
def test_plain_http_to_a_non_loopback_host_is_refused_at_configuration(
    bevis_env: Path, setting: dict
) -> None:
    from jobs.errors import ConfigurationInvalid
    from jobs.mailbox.http import HttpMailbox
    from jobs.settings import get_settings

    s = get_settings(
        **{
            "mailbox_url": "https://far.example.se",
            "mailbox_operators": {"kivra": "https://k.example.se"},
            **setting,
        }
    )
    with pytest.raises(ConfigurationInvalid, match="plain http"):
        HttpMailbox.from_settings(s)


def test_plain_http_to_a_non_loopback_host_fails_the_step_before_any_request(
    bevis_env: Path,
) -> None:
    from jobs.devtools.drill import synthetic_batch
    from jobs.errors import ConfigurationInvalid
    from jobs.settings import get_settings
    from jobs.steps.deliver import deliver_batch, outcome_counts

    batch_id = synthetic_batch("tls-cfg", 4, get_settings(**FAST))
    s = get_settings(mailbox_url="http://mailbox.example.se:8787", **FAST)
    with pytest.raises(ConfigurationInvalid, match="plain http"):
        deliver_batch(batch_id, s)
    assert outcome_counts(batch_id, s)["pending"] == 4
    _, deliveries = ledger_rows(batch_id, s.resolved_ledger_url())
    assert deliveries == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8787", "http://localhost:1", "http://[::1]:8787", "https://x.se"]
)
def test_loopback_http_and_any_https_are_accepted(bevis_env: Path, url: str) -> None:
    from jobs.mailbox.http import HttpMailbox
    from jobs.settings import get_settings

    ops = {} if "127.0.0.1" in url or "localhost" in url or "::1" in url else {"k": url + "/k"}
    HttpMailbox.from_settings(get_settings(mailbox_url=url, mailbox_operators=ops))


def test_cli_simulator_serves_mutual_tls_with_a_token(
    bevis_env: Path, tmp_path: Path, pki: Pki
) -> None:
    """`bevis simulator mailbox --tls-cert --tls-key --client-ca --token-file` as its own
    process: the configured client gets an answer, one without the token a 401."""
    import asyncio
    import os
    import subprocess
    import sys
    import time

    import httpx

    from jobs.mailbox.http import HttpMailbox, tls_context
    from jobs.mailbox.simulator import free_port

    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    env = {**os.environ, "BEVIS_DATA_DIR": str(bevis_env)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from jobs.cli import app; app()", "simulator", "mailbox",
         "--port", str(port), "--tls-cert", str(pki.server_cert), "--tls-key",
         str(pki.server_key), "--client-ca", str(pki.ca), "--token-file",
         str(tmp_path / "token")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/_admin/stats", timeout=1, **_admin(pki)).raise_for_status()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the TLS simulator did not start"
                time.sleep(0.2)

        async def lookups() -> tuple[int, str]:
            verify = tls_context(pki.ca, pki.client_cert, pki.client_key)
            ok = HttpMailbox(url, sender="x", verify=verify, token=TOKEN)
            bare = HttpMailbox(url, sender="x", verify=verify)
            try:
                answers = await ok.lookup([f"19800101{i:04d}" for i in range(20)])
                from jobs.mailbox import AuthenticationFailed

                try:
                    await bare.lookup(["198001010001"])
                    refused = "answered"
                except AuthenticationFailed as exc:
                    refused = str(exc)
                return len(answers), refused
            finally:
                await ok.aclose()
                await bare.aclose()

        answered, refused = asyncio.run(lookups())
        assert answered == 20 and "401" in refused
    finally:
        proc.terminate()
        proc.wait(timeout=10)
