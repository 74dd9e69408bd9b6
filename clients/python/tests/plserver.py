"""A real privledger server for tests: `privledger serve` on a free port in a
temporary data directory, readiness by gRPC health checking, and the admin CLI.
With `tls=ServerTls(...)` it serves TLS (and, with a client CA, mutual TLS) on the
port it picks itself (`--listen 127.0.0.1:0`), read from its "serving gRPC on TCP
addr=..." log line.

Shared by tests/ and e2e/. The binary comes from $PRIVLEDGER_BIN, default
<repo>/target/debug/privledger (the repository root is found from this file's
location). It is never built here.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "privledger"
READY_TIMEOUT = 10.0
SERVING_RE = re.compile(r"serving gRPC on TCP addr=(\S+)")


def privledger_bin() -> Path:
    p = Path(os.environ.get("PRIVLEDGER_BIN") or DEFAULT_BIN)
    if not p.is_absolute():
        p = (REPO_ROOT / p).resolve()
    return p


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_serving(
    addr: str, timeout: float = 1.0, credentials: grpc.ChannelCredentials | None = None
) -> bool:
    """grpc.health.v1.Health/Check with an empty request (the whole server).

    Uses raw bytes so the tests need no grpcio-health-checking: the empty
    HealthCheckRequest encodes to b"" and a SERVING answer to b"\\x08\\x01".
    With credentials, over TLS.
    """
    with (
        grpc.secure_channel(addr, credentials) if credentials else grpc.insecure_channel(addr)
    ) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        try:
            return check(b"", timeout=timeout) == b"\x08\x01"
        except grpc.RpcError:
            return False


@dataclass(frozen=True)
class ServerTls:
    """PEM files for a TLS server: its certificate and key, the CA that verifies it,
    and for mutual TLS the CA its clients' certificates must chain to plus the
    certificate the admin CLI and the readiness check present."""

    ca: Path
    cert: Path
    key: Path
    client_ca: Path | None = None
    admin_cert: Path | None = None
    admin_key: Path | None = None

    def serve_args(self) -> list[str]:
        args = ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]
        if self.client_ca:
            args += ["--tls-client-ca", str(self.client_ca)]
        return args

    def cli_args(self) -> list[str]:
        args = ["--tls-ca", str(self.ca)]
        if self.admin_cert and self.admin_key:
            args += ["--tls-cert", str(self.admin_cert), "--tls-key", str(self.admin_key)]
        return args

    def credentials(self) -> grpc.ChannelCredentials:
        """What an admin client presents: the CA and, if set, the admin certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.admin_key.read_bytes() if self.admin_key else None,
            certificate_chain=self.admin_cert.read_bytes() if self.admin_cert else None,
        )


class PrivledgerServer:
    """`privledger serve` in a temporary data directory, plus its admin CLI."""

    def __init__(
        self,
        data_dir: Path,
        binary: Path,
        extra_args: list[str] | None = None,
        tls: ServerTls | None = None,
    ):
        self.binary = binary
        self.extra_args = list(extra_args or [])
        self.tls = tls
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.addr}"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"

    def start(self) -> None:
        if self.tls:
            self._start_tls()
            return
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
                    *self.extra_args,
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

    def _start_tls(self) -> None:
        """Port 0: the server binds a free port itself and logs which."""
        assert self.tls is not None
        self.port = 0
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "serve",
                "--data",
                str(self.data_dir),
                "--listen",
                "127.0.0.1:0",
                *self.tls.serve_args(),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        log.close()
        creds = self.tls.credentials()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"privledger failed to start (exited with {self.proc.returncode}):\n"
                    f"{self.log()}"
                )
            if not self.port:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    m = SERVING_RE.search(f.read().decode(errors="replace"))
                if m:
                    self.port = int(m.group(1).rsplit(":", 1)[1])
            if self.port and health_serving(self.addr, timeout=0.5, credentials=creds):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"privledger (TLS) did not become ready within {READY_TIMEOUT} s:\n{self.log()}"
        )

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
            *(self.tls.cli_args() if self.tls else []),
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
