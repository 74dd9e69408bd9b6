"""Fixtures: a real privledger server on a free port (see plserver.py), and fake
spawners with just the attributes the hook uses.
"""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from plserver import PrivledgerServer, free_port, privledger_bin  # noqa: F401


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
