"""Fixtures: a real privledger server on a free port, and fake spawners.

The server binary comes from $PRIVLEDGER_BIN, default <repo>/target/debug/privledger
(the repository root is found from this file's location). It is never built here.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "privledger"
READY_TIMEOUT = 10.0


def privledger_bin() -> Path:
    p = Path(os.environ.get("PRIVLEDGER_BIN") or DEFAULT_BIN)
    if not p.is_absolute():
        p = (REPO_ROOT / p).resolve()
    return p


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_serving(addr: str, timeout: float = 1.0) -> bool:
    """grpc.health.v1.Health/Check with an empty request (the whole server).

    Uses raw bytes so the tests need no grpcio-health-checking: the empty
    HealthCheckRequest encodes to b"" and a SERVING answer to b"\\x08\\x01".
    """
    with grpc.insecure_channel(addr) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        try:
            return check(b"", timeout=timeout) == b"\x08\x01"
        except grpc.RpcError:
            return False


class PrivledgerServer:
    """`privledger serve` in a temporary data directory, plus its admin CLI."""

    def __init__(self, data_dir: Path, binary: Path):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"

    def start(self) -> None:
        # The port is picked by binding port 0 and closing it; another process can
        # take it in between, so a start that dies early is retried on a new port.
        last_error = ""
        for _ in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "serve",
                    "--data",
                    str(self.data_dir),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
            log.close()
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_error = f"exited with {self.proc.returncode}"
                    break
                if health_serving(f"127.0.0.1:{self.port}", timeout=0.5):
                    return
                time.sleep(0.05)
            else:
                self.stop()
                raise RuntimeError(
                    f"privledger did not become ready within {READY_TIMEOUT} s:\n{self.log()}"
                )
        raise RuntimeError(f"privledger failed to start ({last_error}):\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def cli(self, *args: str, as_json: bool = False) -> Any:
        cmd = [
            str(self.binary),
            "--server",
            self.url,
            "--token-file",
            str(self.admin_token_file),
            *(["--json"] if as_json else []),
            *args,
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
            )
        if not as_json:
            return r.stdout
        lines = [l for l in r.stdout.splitlines() if l.strip()]
        if len(lines) == 1:
            return json.loads(lines[0])
        return [json.loads(l) for l in lines]

    def audit(self, *args: str) -> list[dict]:
        out = self.cli("audit", "tail", *args, as_json=True)
        if isinstance(out, dict):
            return [out]
        return out


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> PrivledgerServer:
    binary = privledger_bin()
    if not binary.is_file():
        pytest.fail(
            f"privledger binary not found at {binary}; build it (cargo build) or set "
            "PRIVLEDGER_BIN",
            pytrace=False,
        )
    srv = PrivledgerServer(tmp_path_factory.mktemp("privledger") / "data", binary)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def spawner_token(server: PrivledgerServer) -> str:
    out = server.cli("token", "create", "jupyterhub", "--role", "spawner", as_json=True)
    return out["secret"]


@pytest.fixture(scope="session")
def spawner_token_file(spawner_token: str, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("hub") / "privledger.token"
    p.write_text(spawner_token + "\n")
    p.chmod(0o600)
    return p


_user_counter = itertools.count(1)


@pytest.fixture
def username(request) -> str:
    """A fresh user name per test, so grants from other tests never leak in."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"{base}-{next(_user_counter)}"


# ---------------------------------------------------------------------------
# Fake spawners: just the attributes the hook uses, no JupyterHub needed.
# ---------------------------------------------------------------------------


class RecordingLog:
    def __init__(self) -> None:
        self.records: list[tuple[int, str]] = []

    def _log(self, level: int, msg: str, *args: Any) -> None:
        self.records.append((level, msg % args if args else msg))

    def debug(self, msg, *args):
        self._log(logging.DEBUG, msg, *args)

    def info(self, msg, *args):
        self._log(logging.INFO, msg, *args)

    def warning(self, msg, *args):
        self._log(logging.WARNING, msg, *args)

    def error(self, msg, *args):
        self._log(logging.ERROR, msg, *args)

    def text(self, min_level: int = logging.DEBUG) -> str:
        return "\n".join(m for lvl, m in self.records if lvl >= min_level)


class FakeUser:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeSpawner:
    """The slice of DockerSpawner the hook touches."""

    def __init__(
        self,
        user: str,
        name: str = "",
        image: str = "quay.io/jupyter/base-notebook:latest",
        volumes: dict | None = None,
        extra_host_config: Any = None,
        extra_create_kwargs: Any = None,
        environment: dict | None = None,
    ) -> None:
        self.user = FakeUser(user)
        self.name = name
        self.image = image
        self.volumes = dict(volumes or {})
        self.extra_host_config = {} if extra_host_config is None else extra_host_config
        self.extra_create_kwargs = {} if extra_create_kwargs is None else extra_create_kwargs
        self.environment = dict(environment or {})
        self.log = RecordingLog()


@pytest.fixture
def make_spawner():
    return FakeSpawner
