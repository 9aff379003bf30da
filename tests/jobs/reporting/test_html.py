"""The HTML report in a real browser: Debian's headless Chromium, driven over the DevTools
protocol (websocket), with console errors, exceptions and network requests captured and a
full-page screenshot taken. Also the ``bevis report`` / ``bevis bench report`` commands."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.devtools.synthetic_ledger import synthetic_ledger
from jobs.reporting.publish import build_report
from jobs.settings import get_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


class Browser:
    """A minimal DevTools-protocol client: one page, events collected while waiting."""

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        url = None
        while time.monotonic() < deadline and url is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m.group(1) if m else None
        if url is None:
            self.proc.kill()
            pytest.fail("chromium did not start its DevTools endpoint")
        # keep draining chromium's chatter so that a full pipe never blocks it
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(connect(url, max_size=64 * 2**20, open_timeout=30))
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(
                json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            )

    def open(self, url: str, width: int = 1100) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=900,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "exception"))
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in (
                "error",
                "assert",
            ):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif e.get("method") == "Network.loadingFailed":
                out.append(f"network: {p.get('errorText')}")
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def evaluate(self, expression: str):
        return self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )["result"].get("value")

    def screenshot(self, target: Path) -> Path:
        metrics = self.call("Page.getLayoutMetrics", session=True)
        height = int(min(metrics["cssContentSize"]["height"], 8000))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=1100,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        target.write_bytes(base64.b64decode(data))
        return target

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed")
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


@pytest.fixture
def report(bevis_env, tmp_path) -> Path:
    s = get_settings()
    synthetic_ledger(2500, s.resolved_ledger_url(), seed=7, days=12)
    return build_report(tmp_path / "report", settings=s)


def test_report_is_self_contained(report) -> None:
    html = report.read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "@import" not in html and "url(" not in html and "@font-face" not in html
    assert html.count("<svg") >= 6
    for title in (
        "Certificates issued per day",
        "People reached",
        "Digital share over time",
        "Quarantine reasons",
        "Delivery outcomes",
        "Throughput",
    ):
        assert title in html
    assert "reference 73 %" in html
    assert "secondary suppression" in html


@pytest.mark.browser
def test_report_renders_in_chromium_without_errors(report, browser, tmp_path) -> None:
    browser.open(report.as_uri())
    assert browser.errors() == []
    # nothing but the report itself was loaded: no scripts, fonts or images from anywhere
    assert set(browser.requests()) == {report.as_uri()}
    assert browser.evaluate("document.querySelectorAll('svg').length") >= 6
    assert browser.evaluate("document.querySelectorAll('svg rect').length") > 20
    # every chart has a real size on the page
    sizes = browser.evaluate(
        "[...document.querySelectorAll('figure svg')].map(s => s.getBoundingClientRect().height)"
    )
    assert sizes and min(sizes) > 80
    # no horizontal overflow of the page at a laptop width
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1100
    shot = browser.screenshot(tmp_path / "report.png")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    from PIL import Image

    with Image.open(shot) as img:
        assert img.width == 1100 and img.height > 2000
        colours = img.convert("RGB").resize((110, 200)).getcolors(maxcolors=100_000)
        assert len(colours) > 50  # charts and text, not a blank page
    keep = Path("/tmp/bevis-report-screenshot.png")
    keep.write_bytes(png)


@pytest.mark.browser
def test_harness_catches_a_broken_page(browser, tmp_path) -> None:
    """The error capture is real: a page with a script error and a missing image fails."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><img src='missing.png'><script>console.error('boom'); nope();</script>"
    )
    browser.open(page.as_uri())
    errors = browser.errors()
    assert any("boom" in e for e in errors)
    assert any("exception" in e.lower() or "uncaught" in e.lower() for e in errors)
    assert any("network" in e for e in errors)


@pytest.fixture
def cli(monkeypatch):
    """CliRunner; afterwards structlog is reset, because the CLI's configure_logging binds
    the runner's temporary stderr, which is closed once the invocation ends."""
    import structlog

    yield CliRunner()
    structlog.reset_defaults()


def test_cli_report_and_bench(bevis_env, tmp_path, cli) -> None:
    runner = cli
    s = get_settings()
    synthetic_ledger(600, s.resolved_ledger_url(), seed=8, days=5)
    assert runner.invoke(app, ["db", "migrate"]).exit_code == 0  # a report migrates nothing
    out = tmp_path / "cli"
    res = runner.invoke(
        app, ["report", "--from", "2026-11-02", "--to", "2026-11-03", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert (out / "report.html").exists()
    assert (out / "data" / "certificates_by_day_channel.csv").exists()
    assert "2026-11-02 – 2026-11-03" in (out / "report.html").read_text()

    bad = runner.invoke(app, ["report", "--from", "2026-13-01", "--out", str(out)])
    assert bad.exit_code != 0 and "not a date" in bad.output
    rev = runner.invoke(
        app, ["report", "--from", "2026-11-05", "--to", "2026-11-01", "--out", str(out)]
    )
    assert rev.exit_code == 2 and "after" in rev.output

    res = runner.invoke(app, ["bench", "report", "--certificates", "300", "--days", "3"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output.strip().splitlines()[-1])
    assert result["certificates"] == 300 and result["ledger_rows"]["certificates"] == 300
    assert result["refresh_s"] > 0 and result["html_bytes"] > 10_000
