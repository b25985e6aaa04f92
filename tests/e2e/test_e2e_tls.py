"""A node served over HTTPS: ``cunsync serve --certfile --keyfile`` (hypercorn's TLS), with a self-signed
certificate made here with the ``openssl`` command; a tablet that trusts it syncs, plain HTTP and
clients that do not trust it get nowhere."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client.tablet import NodeUnreachable, Tablet
from e2e_harness import ROOT, START_TIMEOUT, V1, Enrol, device_ops, free_port, populate

pytestmark = pytest.mark.e2e


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    "A self-signed certificate for 127.0.0.1 and its key"
    crt, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return crt, key


@pytest.fixture
def https_node(node_db: Path, cert: tuple[Path, Path]) -> Iterator[str]:
    "``cunsync serve`` over HTTPS on a free port; yields its https:// URL"
    crt, key = cert
    port = free_port()
    log = open(node_db.with_suffix(".log"), "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from client.cli import cli; cli()", "serve", "--db", str(node_db),
         "--unit", "510903001000", "--bind", f"127.0.0.1:{port}", "--certfile", str(crt), "--keyfile", str(key)],
        cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(crt))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, node_db.with_suffix(".log").read_text()
            try:
                if httpx.get(url + "/api/health", verify=trust, timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, node_db.with_suffix(".log").read_text()
                time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_a_tablet_syncs_with_a_node_served_over_https(
    https_node: str, cert: tuple[Path, Path], node_db: Path, enrol: Enrol, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as env:
        # how docs/operations.md has a tablet trust a township's own certificate (or its own CA)
        env.setenv("SSL_CERT_FILE", str(cert[0]))
        tab = Tablet.init(tmp_path / "wang.db", https_node, enrol(V1, "wang")[1])
        try:
            populate(tab, 3, tag="tls")
            n = tab.pending()
            tab.sync()
            assert tab.pending() == 0
            assert device_ops(node_db, tab.device) == (n, n, 1, n)
        finally:
            tab.close()

    with httpx.Client() as untrusting:  # the system's CAs do not know a self-signed certificate
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.get(https_node + "/api/health")
        plain = https_node.replace("https://", "http://")
        with pytest.raises(httpx.TransportError):
            untrusting.get(plain + "/api/health", timeout=5)

    with httpx.Client(timeout=5) as untrusting:  # a tablet set to plain HTTP cannot sync either
        tab = Tablet(tmp_path / "wang.db", client=untrusting, sleep=lambda s: None)
        try:
            tab.store.set_meta("server", https_node.replace("https://", "http://"))
            populate(tab, 1, tag="plain")
            with pytest.raises(NodeUnreachable):
                tab.sync(retries=1)
            assert tab.pending() > 0
        finally:
            tab.close()


def test_https_needs_both_the_certificate_and_its_key(node_db: Path, cert: tuple[Path, Path]) -> None:
    from click.testing import CliRunner

    from client.cli import cli

    r = CliRunner().invoke(cli, ["serve", "--db", str(node_db), "--unit", "510903001000",
                                 "--certfile", str(cert[0])])
    assert r.exit_code == 2 and "both --certfile and --keyfile" in r.output
