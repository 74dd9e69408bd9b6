"""examples/compose.yaml parses, and wires the hub to privledger as the hook reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from privledger_jupyterhub import hook

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (ci.sh installs it)")

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPOSE = REPO_ROOT / "examples" / "compose.yaml"


def load():
    return yaml.safe_load(COMPOSE.read_text())


def test_the_hub_reaches_privledger_over_the_shared_socket():
    doc = load()
    services = doc["services"]
    pl, hub = services["privledger"], services["jupyterhub"]
    command = " ".join(pl["command"])
    sock = re.search(r"--unix-socket (\S+)", command).group(1)
    env = hub["environment"]
    assert env["PRIVLEDGER_SERVER"] == f"unix:{sock}"
    # Every PRIVLEDGER_* the hub is given is one the hook reads.
    documented = set(re.findall(r"PRIVLEDGER_[A-Z_]+", hook.__doc__ or ""))
    for name in env:
        if name.startswith("PRIVLEDGER_"):
            assert name in documented, name
    # The socket's directory is a volume both containers mount.
    sock_dir = str(Path(sock).parent)

    def volume_for(svc):
        for v in svc.get("volumes", []):
            src, _, rest = (v if isinstance(v, str) else f"{v['source']}:{v['target']}").partition(":")
            if rest.split(":")[0] == sock_dir:
                return src
        return None

    shared = volume_for(pl)
    assert shared is not None and shared == volume_for(hub), "the socket volume is shared"
    assert shared in doc.get("volumes", {}), "a named volume"


def test_privledger_mounts_the_docker_socket():
    pl = load()["services"]["privledger"]
    mounts = [v if isinstance(v, str) else v.get("source", "") for v in pl.get("volumes", [])]
    assert any("/var/run/docker.sock" in m for m in mounts)
