"""A real privledger server for tests: `privledger serve` on a free port in a
temporary data directory, readiness by gRPC health checking, and the admin CLI.

Shared by tests/ and e2e/. The binary comes from $PRIVLEDGER_BIN, default
<repo>/target/debug/privledger (the repository root is found from this file's
location). It is never built here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc

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

    def __init__(self, data_dir: Path, binary: Path, extra_args: list[str] | None = None):
        self.binary = binary
        self.extra_args = list(extra_args or [])
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
