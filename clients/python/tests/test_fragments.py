"""Pure parts: socket recognition, bind parsing, server addresses."""

from __future__ import annotations

import pytest

from privledger_jupyterhub import Bind, SocketGuard, Target
from privledger_jupyterhub.fragments import Fragments, apply_fragments

GUARD = SocketGuard.build(["/srv/docker/docker.sock"], "/run/privledger/users")


@pytest.mark.parametrize(
    "path",
    [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/run/docker.sock/",
        "//var/run//docker.sock",
        "/var/run/../run/docker.sock",
        "/var/run",
        "/run",
        "/var",
        "/",
        "/srv/docker/docker.sock",
        "/srv/docker",
        "/srv",
        "/run/privledger/users",
        "/run/privledger/users/alice/docker.sock",
        "/var/run/privledger/users/bob",
        "/run/privledger",
    ],
)
def test_exposes_socket(path):
    assert GUARD.exposes(path)


@pytest.mark.parametrize(
    "path",
    [
        "/home/alice",
        "/var/lib/docker-data",
        "/run/user/1000",
        "/var/run/docker.sock.d",
        "/srv/docker2",
        "jupyterhub-user-alice",
        "docker.sock",
        "",
    ],
)
def test_does_not_expose_socket(path):
    assert not GUARD.exposes(path)


@pytest.mark.parametrize(
    "spec, bind",
    [
        ("/var/run/docker.sock:/var/run/docker.sock:rw", Bind("/var/run/docker.sock", "/var/run/docker.sock", "rw")),
        ("/a:/b:ro", Bind("/a", "/b", "ro")),
        ("/a:/b", Bind("/a", "/b", "rw")),
        ("/run/privledger/users/a%3Ab/docker.sock:/run/privledger/docker.sock:rw",
         Bind("/run/privledger/users/a%3Ab/docker.sock", "/run/privledger/docker.sock", "rw")),
    ],
)
def test_bind_parse(spec, bind):
    assert Bind.parse(spec) == bind


@pytest.mark.parametrize(
    "server, target, tls",
    [
        ("http://127.0.0.1:50051", "127.0.0.1:50051", False),
        ("http://ledger.internal:7000/", "ledger.internal:7000", False),
        ("https://ledger.example.org", "ledger.example.org:443", True),
        ("https://[::1]:8443", "[::1]:8443", True),
        ("127.0.0.1:50051", "127.0.0.1:50051", False),
        ("unix:///run/privledger/api.sock", "unix:///run/privledger/api.sock", False),
        ("/run/privledger/api.sock", "unix:/run/privledger/api.sock", False),
    ],
)
def test_target_parse(server, target, tls):
    t = Target.parse(server)
    assert (t.target, t.tls) == (target, tls)


def test_mounts_are_filtered():
    class S:
        class user:
            name = "alice"
        name = ""
        volumes = {}
        mounts = [
            {"type": "bind", "source": "/var/run/docker.sock", "target": "/sock"},
            {"type": "volume", "source": "data", "target": "/data"},
            {"Type": "bind", "Source": "/srv/shared", "Target": "/shared"},
        ]
        extra_host_config = {"mounts": [{"type": "bind", "source": "/run", "target": "/r"}]}
        extra_create_kwargs = {}
        environment = {}
        log = None

    s = S()
    removed = apply_fragments(s, Fragments.nothing(), GUARD)
    assert removed == ["/var/run/docker.sock", "/run"]
    assert [m.get("source", m.get("Source")) for m in s.mounts] == ["data", "/srv/shared"]
    assert s.extra_host_config["mounts"] == []
    assert s.extra_host_config["binds"] == {}
