"""TLS and mutual TLS between the hook's client and the real privledger binary.

A throwaway PKI is made with the `openssl` command line tool: a server CA and a
server certificate for localhost / 127.0.0.1, a client CA and the Hub's client
certificate (CN jupyterhub-hub) plus an admin one for the CLI, and a rogue CA whose
client certificate the server must refuse. Two servers run: `serve --tls-cert
--tls-key` (TLS) and the same with `--tls-client-ca` (mutual TLS); the plaintext
server of conftest.py serves the mismatched cases.

Every call goes through the package's public API (authorize_spawn, the hook) with a
gRPC deadline and a wall-clock bound, so a failure must be an exception, never a
hang; after each failure the same server must still answer a correct request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from plserver import PrivledgerServer, ServerTls, privledger_bin
from privledger_jupyterhub import (
    PrivledgerUnavailable,
    Target,
    authorize_spawn,
    make_pre_spawn_hook,
)
from privledger_jupyterhub._proto.privledger.v1 import privledger_pb2 as pb
from privledger_jupyterhub._proto.privledger.v1 import privledger_pb2_grpc as pb_grpc

OPENSSL = shutil.which("openssl")
if OPENSSL is None:
    pytest.skip(
        "openssl is not on PATH: the TLS tests make their certificates with it "
        "(Debian/Ubuntu: apt-get install openssl)",
        allow_module_level=True,
    )

#: The gRPC deadline of every call. A failed handshake must end well before it.
CALL_TIMEOUT = 5.0
#: Wall-clock bound on a call, deadline included: beyond it the call hung.
HANG_LIMIT = CALL_TIMEOUT + 5
HUB_CN = "jupyterhub-hub"
ADMIN_CN = "privledger-test-admin"


# ---------------------------------------------------------------------------
# A throwaway PKI, made with openssl
# ---------------------------------------------------------------------------


def openssl(cwd: Path, *args: str) -> None:
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")


EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(d: Path, name: str, cn: str) -> None:
    openssl(
        d, "req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-subj", f"/CN={cn}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )


def issue(d: Path, name: str, ca: str, cn: str, extensions: list[str]) -> None:
    openssl(d, "req", "-new", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}")
    (d / f"{name}.ext").write_text(
        "\n".join(["basicConstraints=critical,CA:FALSE", *extensions]) + "\n"
    )
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")


@dataclass(frozen=True)
class Pki:
    dir: Path

    def pem(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def ca(self) -> str:
        """What the Hub is given as ca_file: the CA of the server's certificate."""
        return str(self.pem("server-ca"))

    def client(self, name: str) -> dict:
        return {"cert_file": str(self.pem(name)), "key_file": str(self.key(name))}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    server_ext = ["keyUsage=critical,digitalSignature", "extendedKeyUsage=serverAuth",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    client_ext = ["keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"]
    make_ca(d, "server-ca", "privledger test server CA")
    issue(d, "server", "server-ca", "localhost", server_ext)
    make_ca(d, "client-ca", "privledger test client CA")
    issue(d, "hub", "client-ca", HUB_CN, client_ext)
    issue(d, "admin", "client-ca", ADMIN_CN, client_ext)
    make_ca(d, "rogue-ca", "not the client CA")
    issue(d, "rogue", "rogue-ca", HUB_CN, client_ext)
    return Pki(d)


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


def _start(tmp_path_factory, name: str, tls: ServerTls) -> PrivledgerServer:
    binary = privledger_bin()
    if not binary.is_file():
        pytest.fail(f"privledger binary not found at {binary}; build it (cargo build) or set "
                    "PRIVLEDGER_BIN", pytrace=False)
    srv = PrivledgerServer(tmp_path_factory.mktemp(name) / "data", binary,
                           extra_args=["--docker", "off"], tls=tls)
    srv.start()
    srv.spawner_token = srv.cli("token", "create", "hub", "--role", "spawner",
                                as_json=True)["secret"]
    return srv


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    srv = _start(tmp_path_factory, "tls", ServerTls(
        ca=pki.pem("server-ca"), cert=pki.pem("server"), key=pki.key("server")))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    srv = _start(tmp_path_factory, "mtls", ServerTls(
        ca=pki.pem("server-ca"), cert=pki.pem("server"), key=pki.key("server"),
        client_ca=pki.pem("client-ca"),
        admin_cert=pki.pem("admin"), admin_key=pki.key("admin")))
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------
# Calls through the package's API, bounded in time
# ---------------------------------------------------------------------------


def spawn(url: str, token: str, user: str, **tls) -> pb.Decision:
    """authorize_spawn as the hook calls it; raises what it raises."""
    return asyncio.run(asyncio.wait_for(
        authorize_spawn(Target.parse(url), token, user=user, image="busybox:1.36",
                        timeout=CALL_TIMEOUT, **tls),
        timeout=HANG_LIMIT,
    ))


def spawn_fails(url: str, token: str, user: str, **tls) -> grpc.aio.AioRpcError:
    """The call must fail with a gRPC error (not hang, not time out)."""
    t0 = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        spawn(url, token, user, **tls)
    elapsed = time.monotonic() - t0
    err = exc.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    assert elapsed < CALL_TIMEOUT, f"the failure took {elapsed:.1f} s: it waited for the deadline"
    return err


def run_hook(hook, spawner):
    return asyncio.run(asyncio.wait_for(hook(spawner), timeout=HANG_LIMIT + 5))


def entries(server: PrivledgerServer, user: str) -> list[pb.Entry]:
    """The server's spawn_decided entries for user, by the audit Stream RPC, over
    the same TLS (and admin client certificate) as the CLI."""
    admin = server.admin_token_file.read_text().strip()

    async def go():
        async with grpc.aio.secure_channel(server.addr, server.tls.credentials()) as ch:
            call = pb_grpc.AuditStub(ch).Stream(
                pb.StreamRequest(from_seq=1, kinds=["spawn_decided"], subject=user),
                metadata=(("authorization", f"Bearer {admin}"),),
                timeout=CALL_TIMEOUT,
            )
            return [e async for e in call]

    return asyncio.run(asyncio.wait_for(go(), timeout=HANG_LIMIT))


def body_of(server: PrivledgerServer, decision: pb.Decision, user: str) -> dict:
    """The JSON body of the entry that recorded decision, checked against its hash."""
    (e,) = [e for e in entries(server, user) if e.seq == decision.seq]
    assert e.kind == "spawn_decided"
    assert hashlib.sha256(e.prev_hash + e.body).digest() == e.hash, "body is what was hashed"
    body = json.loads(e.body)
    assert body["seq"] == decision.seq
    assert body["event"]["decision_id"] == decision.decision_id
    return body


def still_serves(server: PrivledgerServer, pki: Pki, user: str) -> None:
    """A fresh, correct request to server succeeds and is recorded."""
    tls = {}
    if server.tls:
        tls["ca_file"] = pki.ca
        if server.tls.client_ca:
            tls.update(pki.client("hub"))
    d = spawn(server.url, server.spawner_token, f"{user}-after", **tls)
    assert d.decision_id and d.seq > 0


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_with_ca_authorizes_spawn(tls_server, pki, username, host):
    url = f"https://{host}:{tls_server.port}"
    tls_server.cli("group", "add-member", "docker-privileged", username)
    d = spawn(url, tls_server.spawner_token, username, ca_file=pki.ca)
    assert d.allowed and "docker-privileged" in d.reason
    body = body_of(tls_server, d, username)
    assert "actor_cert" not in body, "no client certificate was presented"


def test_tls_hook_with_ca_file(tls_server, pki, make_spawner, username):
    hook = make_pre_spawn_hook(server=tls_server.url, token=tls_server.spawner_token,
                               ca_file=pki.ca, on_unavailable="refuse", timeout=CALL_TIMEOUT)
    sp = make_spawner(username)
    run_hook(hook, sp)
    d = sp.privledger_decision
    assert d is not None and d.decision_id
    assert sp.extra_create_kwargs["labels"]["privledger.decision"] == d.decision_id


def test_tls_without_ca_fails_cleanly(tls_server, pki, make_spawner, username):
    # The system roots do not know the throwaway CA: the handshake fails.
    err = spawn_fails(tls_server.url, tls_server.spawner_token, username)
    assert "CERTIFICATE_VERIFY_FAILED" in (err.details() or "")
    hook = make_pre_spawn_hook(server=tls_server.url, token=tls_server.spawner_token,
                               on_unavailable="refuse", timeout=CALL_TIMEOUT)
    with pytest.raises(PrivledgerUnavailable, match="UNAVAILABLE") as exc:
        run_hook(hook, make_spawner(username))
    assert isinstance(exc.value.__cause__, grpc.aio.AioRpcError)
    assert entries(tls_server, username) == []
    still_serves(tls_server, pki, username)


# ---------------------------------------------------------------------------
# Mutual TLS
# ---------------------------------------------------------------------------


def test_mtls_client_cert_is_recorded(mtls_server, pki, username):
    d = spawn(mtls_server.url, mtls_server.spawner_token, username,
              ca_file=pki.ca, **pki.client("hub"))
    assert d.decision_id and not d.allowed
    body = body_of(mtls_server, d, username)
    assert f"cn={HUB_CN}" in body["actor_cert"], body
    assert ADMIN_CN not in body["actor_cert"]


def test_mtls_hook_configured_from_environment(mtls_server, pki, make_spawner, username,
                                               monkeypatch, tmp_path):
    token_file = tmp_path / "privledger.token"
    token_file.write_text(mtls_server.spawner_token + "\n")
    monkeypatch.delenv("PRIVLEDGER_TOKEN", raising=False)
    monkeypatch.setenv("PRIVLEDGER_SERVER", mtls_server.url)
    monkeypatch.setenv("PRIVLEDGER_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("PRIVLEDGER_CA_FILE", pki.ca)
    monkeypatch.setenv("PRIVLEDGER_CLIENT_CERT_FILE", str(pki.pem("hub")))
    monkeypatch.setenv("PRIVLEDGER_CLIENT_KEY_FILE", str(pki.key("hub")))
    hook = make_pre_spawn_hook(on_unavailable="refuse", timeout=CALL_TIMEOUT)
    assert hook.settings.cert_file == str(pki.pem("hub"))
    assert hook.settings.key_file == str(pki.key("hub"))
    sp = make_spawner(username, name="gpu")
    run_hook(hook, sp)
    d = sp.privledger_decision
    assert d is not None
    body = body_of(mtls_server, d, username)
    assert f"cn={HUB_CN}" in body["actor_cert"]
    assert body["event"]["server_name"] == "gpu"


def test_mtls_without_client_cert_fails_cleanly(mtls_server, pki, make_spawner, username):
    spawn_fails(mtls_server.url, mtls_server.spawner_token, username, ca_file=pki.ca)
    hook = make_pre_spawn_hook(server=mtls_server.url, token=mtls_server.spawner_token,
                               ca_file=pki.ca, on_unavailable="refuse", timeout=CALL_TIMEOUT)
    with pytest.raises(PrivledgerUnavailable, match="UNAVAILABLE") as exc:
        run_hook(hook, make_spawner(username))
    assert isinstance(exc.value.__cause__, grpc.aio.AioRpcError)
    # on_unavailable=deny: the server starts, without any Docker privilege.
    deny = make_pre_spawn_hook(server=mtls_server.url, token=mtls_server.spawner_token,
                               ca_file=pki.ca, timeout=CALL_TIMEOUT)
    sp = make_spawner(username)
    run_hook(deny, sp)
    assert sp.privledger_decision is None
    assert sp.extra_host_config["privileged"] is False
    assert entries(mtls_server, username) == []
    still_serves(mtls_server, pki, username)


def test_mtls_client_cert_from_another_ca_fails_cleanly(mtls_server, pki, username):
    spawn_fails(mtls_server.url, mtls_server.spawner_token, username,
                ca_file=pki.ca, **pki.client("rogue"))
    assert entries(mtls_server, username) == []
    still_serves(mtls_server, pki, username)


# ---------------------------------------------------------------------------
# Plaintext and TLS mismatched
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tls_server", "mtls_server"])
def test_plaintext_to_tls_port_fails_cleanly(request, pki, username, which):
    srv = request.getfixturevalue(which)
    spawn_fails(f"http://{srv.addr}", srv.spawner_token, username)
    assert entries(srv, username) == []
    still_serves(srv, pki, username)


def test_tls_to_plaintext_server_fails_cleanly(server, spawner_token, pki, username):
    spawn_fails(f"https://{server.addr}", spawner_token, username, ca_file=pki.ca)
    assert [e for e in server.audit("--kind", "spawn_decided", "--subject", username)] == []
    d = spawn(server.url, spawner_token, f"{username}-after")
    assert d.decision_id
