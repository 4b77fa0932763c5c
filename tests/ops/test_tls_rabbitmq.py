"""hello-numpy-sag over TLS: a throwaway CA and certificates (openssl CLI), a private node with an amqps
listener on loopback, server and workers as processes with --tls-* options, one of them with a client cert."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fl_broker.errors import TransportError
from fl_broker.ops.localnode import RABBITMQ_BIN, LocalNode, TlsListener
from fl_broker.ops.tls import TlsFiles
from fl_broker.transport import connect
from tests.support.processes import assert_exited_cleanly, run_hello_job, spawn

pytestmark = pytest.mark.rabbitmq

INITIAL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(folder: Path) -> dict[str, Path]:
    """ca.pem/ca.key, server.pem/server.key (SAN localhost + 127.0.0.1), client.pem/client.key."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fl-broker test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "san.ext"), ("client", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", f"{name}.pem", cwd=folder)  # fmt: skip
    for key in folder.glob("*.key"):
        key.chmod(0o644)  # the test node runs as this user; 0600 keys would do too
    return {p.stem + p.suffix.replace(".", "_"): p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    if shutil.which("openssl") is None or not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip("needs openssl and rabbitmq-server")
    pki = tmp_path_factory.mktemp("pki")
    files = make_pki(pki)
    node = LocalNode(
        tmp_path_factory.mktemp("tls-node"),
        tls=TlsListener(ca=files["ca_pem"], cert=files["server_pem"], key=files["server_key"]),
    )
    node.start()
    try:
        yield node, files
    finally:
        node.stop()


def test_untrusted_broker_certificate_is_refused(tls_node, tmp_path):
    node, _ = tls_node
    other = make_pki(tmp_path / "other")
    with pytest.raises(TransportError):
        connect(node.amqps_url(), tls=TlsFiles(ca=other["ca_pem"]), options=_one_attempt())
    with pytest.raises(ValueError, match="amqps"):
        connect(node.amqp_url(), tls=TlsFiles(ca=other["ca_pem"]))


def _one_attempt():  # type: ignore[no-untyped-def]
    from fl_broker.transport import TransportOptions

    return TransportOptions(connect_attempts=1)


def test_hello_numpy_sag_over_tls(tls_node, tmp_path, processes):
    node, files = tls_node
    url = node.amqps_url()
    ca = str(files["ca_pem"])
    started = time.monotonic()
    processes.append(spawn(tmp_path, "server", env={"FL_BROKER_URL": url, "FL_TLS_CA": ca}))
    mutual = ["--tls-cert", str(files["client_pem"]), "--tls-key", str(files["client_key"])]
    processes.append(spawn(tmp_path, "worker", "--site", "site-1", "--tls-ca", ca, *mutual, env={"FL_BROKER_URL": url}))
    processes.append(spawn(tmp_path, "worker", "--site", "site-2", env={"FL_BROKER_URL": url, "FL_TLS_CA": ca}))
    result = run_hello_job(connect(url, tls=TlsFiles(ca=files["ca_pem"])))
    assert result.phase == "finished"
    assert_exited_cleanly(processes)
    elapsed = time.monotonic() - started
    print(f"\nTLS run: {result.seconds:.2f} s for 10 rounds; {elapsed:.2f} s from process start to exit")
    np.testing.assert_array_equal(np.load(tmp_path / "server" / "run_1" / "models" / "server.npy"), INITIAL + 10)


def test_each_node_of_a_url_list_is_checked_against_its_own_host_name(tls_node, caplog):
    """This machine's host name reaches the node too, but the certificate names only localhost and 127.0.0.1:
    that URL must fail its host-name check, and the next (localhost) pass its own."""
    import logging
    import socket

    node, files = tls_node
    other_name = socket.gethostname()
    try:
        reachable = socket.gethostbyname(other_name) == "127.0.0.1"
    except OSError:
        reachable = False
    if not reachable or other_name in ("localhost", "127.0.0.1"):
        pytest.skip(f"the host name {other_name!r} does not resolve to 127.0.0.1")
    good = node.amqps_url()
    wrong_name = good.replace("@localhost:", f"@{other_name}:")
    caplog.set_level(logging.INFO, logger="fl_broker.transport")
    with pytest.raises(TransportError):
        connect(wrong_name, tls=TlsFiles(ca=files["ca_pem"]), options=_one_attempt())
    transport = connect(f"{wrong_name},{good}", tls=TlsFiles(ca=files["ca_pem"]), options=_one_attempt())
    transport.close()
    assert f"cannot connect to amqps://{other_name}:{node.amqps_port} (" in caplog.text
    assert f"connected to amqps://localhost:{node.amqps_port}" in caplog.text
