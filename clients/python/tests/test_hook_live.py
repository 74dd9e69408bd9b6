"""The pre_spawn_hook against a real privledger server (see conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from privledger_jupyterhub import PrivledgerUnavailable, make_pre_spawn_hook

SOCKET = "/var/run/docker.sock"
LIMITED_HOST = "/run/privledger/users/{user}"
LIMITED_CONTAINER_DIR = "/run/privledger"
LIMITED_CONTAINER = "/run/privledger/docker.sock"

USER_VOLUMES = {
    "/srv/homes/{username}": "/home/jovyan",
    "jupyterhub-user-{username}": {"bind": "/home/jovyan/work", "mode": "rw"},
}
USER_BINDS = {
    "/srv/homes/{username}": {"bind": "/home/jovyan", "mode": "rw"},
    "jupyterhub-user-{username}": {"bind": "/home/jovyan/work", "mode": "rw"},
}


def run(hook, spawner):
    return asyncio.run(hook(spawner))


@pytest.fixture
def hook(server, spawner_token_file):
    return make_pre_spawn_hook(
        server=server.url, token_file=str(spawner_token_file), timeout=5
    )


def decisions_for(server, user: str) -> list[dict]:
    return [
        e["event"]
        for e in server.audit("--kind", "spawn_decided", "--subject", user)
        if e["event"].get("user") == user
    ]


def assert_common(spawner, user: str):
    """Labels stamped, decision logged, the user's own volumes kept."""
    d = spawner.privledger_decision
    assert d is not None and d.decision_id
    labels = spawner.extra_create_kwargs["labels"]
    assert labels["privledger.decision"] == d.decision_id
    assert labels["privledger.user"] == user
    binds = spawner.extra_host_config["binds"]
    assert isinstance(binds, dict), "binds must be a dict so DockerSpawner merges them"
    for host, spec in USER_BINDS.items():
        assert binds[host] == spec
    assert f"decision {d.decision_id}" in spawner.log.text(logging.INFO)
    return d, binds


def test_deny_user_with_nothing(server, hook, make_spawner, username):
    sp = make_spawner(username, volumes=USER_VOLUMES)
    run(hook, sp)
    d, binds = assert_common(sp, username)
    assert not d.allowed
    assert "no active grant" in d.reason
    assert set(binds) == set(USER_BINDS)
    assert sp.extra_host_config["privileged"] is False
    assert "DOCKER_HOST" not in sp.environment
    # The decision is in the audit trail, with the same id.
    (ev,) = decisions_for(server, username)
    assert ev["decision_id"] == d.decision_id and ev["allowed"] is False


def test_raw_rw_via_docker_privileged(server, hook, make_spawner, username):
    server.cli("group", "add-member", "docker-privileged", username)
    sp = make_spawner(username, volumes=USER_VOLUMES)
    run(hook, sp)
    d, binds = assert_common(sp, username)
    assert d.allowed
    assert binds[SOCKET] == {"bind": SOCKET, "mode": "rw"}
    assert set(binds) == set(USER_BINDS) | {SOCKET}
    assert sp.extra_host_config["privileged"] is False
    assert "docker-privileged" in d.reason
    assert "DOCKER_HOST" not in sp.environment


def test_raw_ro(server, hook, make_spawner, username):
    server.cli(
        "grant", "issue", "--user", username, "--socket", "raw", "--mode", "ro",
        "--reason", "read-only monitoring",
    )
    sp = make_spawner(username, volumes=USER_VOLUMES)
    run(hook, sp)
    d, binds = assert_common(sp, username)
    assert d.allowed
    assert binds[SOCKET] == {"bind": SOCKET, "mode": "ro"}
    assert sp.extra_host_config["privileged"] is False


def test_privileged(server, hook, make_spawner, username):
    server.cli("grant", "issue", "--user", username, "--privileged", "--reason", "fuse mounts")
    sp = make_spawner(username, volumes=USER_VOLUMES)
    run(hook, sp)
    d, binds = assert_common(sp, username)
    assert d.allowed
    assert sp.extra_host_config["privileged"] is True
    assert set(binds) == set(USER_BINDS), "privileged alone gives no socket"


def test_limited(server, hook, make_spawner, username):
    server.cli("grant", "issue", "--user", username, "--socket", "limited", "--reason", "builds")
    sp = make_spawner(username, volumes=USER_VOLUMES, environment={"FOO": "bar"})
    run(hook, sp)
    d, binds = assert_common(sp, username)
    assert d.allowed
    host = LIMITED_HOST.format(user=username)
    assert binds[host] == {"bind": LIMITED_CONTAINER_DIR, "mode": "rw"}
    assert SOCKET not in binds
    assert sp.environment == {"FOO": "bar", "DOCKER_HOST": f"unix://{LIMITED_CONTAINER}"}
    assert sp.extra_host_config["privileged"] is False


ADMIN_SOCKET_VOLUMES = {
    **USER_VOLUMES,
    # What an admin used to write to give everybody the socket:
    "/var/run/docker.sock": "/var/run/docker.sock",
    # ... and aliases that expose it just as well:
    "/run": {"bind": "/host-run", "mode": "ro"},
    "/run/docker.sock/": {"bind": "/docker.sock", "mode": "rw"},
}
ADMIN_EXTRA_HOST_CONFIG = {
    "binds": ["/var/run:/host-var-run:ro", "/srv/shared:/shared:ro"],
    "privileged": True,
    "mem_limit": "2g",
}


def test_admin_socket_volume_removed(server, hook, make_spawner, username):
    sp = make_spawner(
        username,
        volumes=ADMIN_SOCKET_VOLUMES,
        extra_host_config=dict(ADMIN_EXTRA_HOST_CONFIG),
        extra_create_kwargs={"labels": {"team": "physics"}, "user": "root"},
    )
    run(hook, sp)
    d, binds = assert_common(sp, username)
    assert not d.allowed
    # Gone from the spawner's volumes too, not just from this spawn's binds.
    assert sp.volumes == USER_VOLUMES
    assert binds == {**USER_BINDS, "/srv/shared": {"bind": "/shared", "mode": "ro"}}
    assert sp.extra_host_config["privileged"] is False
    assert sp.extra_host_config["mem_limit"] == "2g"
    assert sp.extra_create_kwargs["labels"]["team"] == "physics"
    assert sp.extra_create_kwargs["user"] == "root"
    warnings = sp.log.text(logging.WARNING)
    for path in ("/var/run/docker.sock", "/run", "/run/docker.sock/", "/var/run"):
        assert f"bind {path} ->" in warnings


def test_admin_socket_volume_replaced_by_grant(server, hook, make_spawner, username):
    """A granted user gets the socket in the granted mode, not the admin's."""
    server.cli(
        "grant", "issue", "--user", username, "--socket", "raw", "--mode", "ro",
        "--reason", "ci runner",
    )
    sp = make_spawner(username, volumes=ADMIN_SOCKET_VOLUMES,
                      extra_host_config=dict(ADMIN_EXTRA_HOST_CONFIG))
    run(hook, sp)
    d, binds = assert_common(sp, username)
    assert d.allowed
    assert binds[SOCKET] == {"bind": SOCKET, "mode": "ro"}
    assert "/run" not in binds and "/var/run" not in binds
    assert SOCKET not in sp.volumes and "/run" not in sp.volumes
    assert sp.extra_host_config["privileged"] is False


def test_revocation_between_spawns(server, hook, make_spawner, username):
    """JupyterHub reuses the spawner object: a second start after the user left
    docker-privileged must not keep the first start's socket bind."""
    server.cli("group", "add-member", "docker-privileged", username)
    sp = make_spawner(username, volumes=USER_VOLUMES)
    run(hook, sp)
    first = sp.privledger_decision
    assert first.allowed and SOCKET in sp.extra_host_config["binds"]

    server.cli("group", "remove-member", "docker-privileged", username, "--reason", "test")
    run(hook, sp)
    second, binds = assert_common(sp, username)
    assert not second.allowed
    assert second.decision_id != first.decision_id and second.seq > first.seq
    assert set(binds) == set(USER_BINDS)

    events = decisions_for(server, username)
    assert [e["allowed"] for e in events] == [True, False]


def test_limited_then_nothing_drops_docker_host(server, hook, make_spawner, username):
    out = server.cli(
        "grant", "issue", "--user", username, "--socket", "limited", "--reason", "builds",
        as_json=True,
    )
    sp = make_spawner(username)
    run(hook, sp)
    assert "DOCKER_HOST" in sp.environment
    server.cli("grant", "revoke", str(out["id"]), "--reason", "project over")
    run(hook, sp)
    assert "DOCKER_HOST" not in sp.environment
    assert not any("/run/privledger" in h for h in sp.extra_host_config["binds"])


def test_named_server_and_image_are_recorded(server, hook, make_spawner, username):
    sp = make_spawner(username, name="gpu", image="busybox:1.36")
    run(hook, sp)
    (ev,) = decisions_for(server, username)
    assert ev["server_name"] == "gpu"
    assert ev["image"] == "busybox:1.36"
    assert ev["decision_id"] == sp.privledger_decision.decision_id


def test_callable_extra_host_config(server, hook, make_spawner, username):
    """DockerSpawner >= 13 accepts a (possibly async) callable; it is wrapped."""
    calls = []

    async def admin_host_config(spawner):
        calls.append(spawner.user.name)
        return {"binds": [f"{SOCKET}:{SOCKET}:rw", "/srv/x:/x:ro"], "privileged": True}

    sp = make_spawner(username, extra_host_config=admin_host_config,
                      extra_create_kwargs=lambda s: {"labels": ["legacy"]})
    for _ in range(2):  # a second spawn must not wrap the wrapper
        run(hook, sp)
        assert callable(sp.extra_host_config)
        cfg = asyncio.run(sp.extra_host_config(sp))
        assert cfg["binds"] == {"/srv/x": {"bind": "/x", "mode": "ro"}}
        assert cfg["privileged"] is False
        labels = asyncio.run(sp.extra_create_kwargs(sp))["labels"]
        assert labels == {
            "legacy": "",
            "privledger.decision": sp.privledger_decision.decision_id,
            "privledger.user": username,
        }
    assert calls == [username, username]


# ---------------------------------------------------------------------------
# The ledger cannot be reached
# ---------------------------------------------------------------------------


def _dead_url():
    from plserver import free_port

    return f"http://127.0.0.1:{free_port()}"


def _stale_spawner(make_spawner, username):
    """A spawner that carries an earlier allowed decision and an admin socket."""
    sp = make_spawner(
        username,
        volumes=ADMIN_SOCKET_VOLUMES,
        extra_host_config={"binds": {SOCKET: {"bind": SOCKET, "mode": "rw"}}, "privileged": True},
        extra_create_kwargs={"labels": {"privledger.decision": "7", "privledger.user": username,
                                        "team": "x"}},
    )
    return sp


def test_server_down_deny(make_spawner, username, spawner_token):
    hook = make_pre_spawn_hook(server=_dead_url(), token=spawner_token,
                               on_unavailable="deny", timeout=3)
    sp = _stale_spawner(make_spawner, username)
    t0 = time.monotonic()
    run(hook, sp)  # no exception: the server starts, without privileges
    assert time.monotonic() - t0 < 10
    assert sp.privledger_decision is None
    assert sp.volumes == USER_VOLUMES
    assert sp.extra_host_config["binds"] == USER_BINDS
    assert sp.extra_host_config["privileged"] is False
    assert sp.extra_create_kwargs["labels"] == {"team": "x"}, "stale decision labels removed"
    err = sp.log.text(logging.ERROR)
    assert "WITHOUT Docker privileges" in err and "UNAVAILABLE" in err


def test_server_down_refuse(make_spawner, username, spawner_token):
    url = _dead_url()
    hook = make_pre_spawn_hook(server=url, token=spawner_token,
                               on_unavailable="refuse", timeout=3)
    sp = _stale_spawner(make_spawner, username)
    with pytest.raises(PrivledgerUnavailable) as exc:
        run(hook, sp)
    msg = str(exc.value)
    assert "refusing to start the server" in msg and url in msg and username in msg
    # Stripped anyway, in case something catches the exception and spawns.
    assert sp.extra_host_config["privileged"] is False
    assert SOCKET not in sp.extra_host_config["binds"]


def test_a_dead_node_is_passed_over_for_the_next(server, spawner_token, make_spawner,
                                                  username):
    dead = _dead_url()
    hook = make_pre_spawn_hook(server=f"{dead},{server.url}", token=spawner_token,
                               on_unavailable="refuse", timeout=3)
    sp = make_spawner(username)
    run(hook, sp)
    assert sp.privledger_decision is not None
    assert len(decisions_for(server, username)) == 1


def test_every_node_down_names_them_all(make_spawner, username, spawner_token):
    a, b = _dead_url(), _dead_url()
    hook = make_pre_spawn_hook(server=[a, b], token=spawner_token,
                               on_unavailable="refuse", timeout=3)
    with pytest.raises(PrivledgerUnavailable) as exc:
        run(hook, make_spawner(username))
    assert a in str(exc.value) and b in str(exc.value)


def test_server_stopped_mid_life(tmp_path, make_spawner, username):
    """A server that was up and went away: same fail-closed answer."""
    from plserver import PrivledgerServer, privledger_bin

    srv = PrivledgerServer(tmp_path / "data", privledger_bin())
    srv.start()
    try:
        srv.cli("group", "add-member", "docker-privileged", username)
        token = srv.cli("token", "create", "hub2", "--role", "spawner", as_json=True)["secret"]
        deny = make_pre_spawn_hook(server=srv.url, token=token, timeout=3)
        refuse = make_pre_spawn_hook(server=srv.url, token=token, timeout=3,
                                     on_unavailable="refuse")
        sp = make_spawner(username)
        run(deny, sp)
        assert SOCKET in sp.extra_host_config["binds"]
    finally:
        srv.stop()
    run(deny, sp)
    assert SOCKET not in sp.extra_host_config["binds"]
    assert "privledger.decision" not in sp.extra_create_kwargs["labels"]
    with pytest.raises(PrivledgerUnavailable):
        run(refuse, make_spawner(username))


@pytest.mark.parametrize("mode", ["deny", "refuse"])
def test_rejected_token(server, make_spawner, username, mode):
    hook = make_pre_spawn_hook(server=server.url, token="plg_not-a-real-token",
                               on_unavailable=mode, timeout=3)
    server.cli("group", "add-member", "docker-privileged", username)
    sp = make_spawner(username, volumes=ADMIN_SOCKET_VOLUMES)
    if mode == "refuse":
        with pytest.raises(PrivledgerUnavailable, match="rejected the spawner token"):
            run(hook, sp)
    else:
        run(hook, sp)
        assert "rejected the spawner token" in sp.log.text(logging.ERROR)
    assert SOCKET not in sp.extra_host_config["binds"]
    assert decisions_for(server, username) == []


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def test_configured_from_environment(server, spawner_token_file, make_spawner, username,
                                     monkeypatch):
    monkeypatch.setenv("PRIVLEDGER_SERVER", server.url)
    monkeypatch.setenv("PRIVLEDGER_TOKEN_FILE", str(spawner_token_file))
    monkeypatch.delenv("PRIVLEDGER_TOKEN", raising=False)
    monkeypatch.setenv("PRIVLEDGER_ON_UNAVAILABLE", "refuse")
    monkeypatch.setenv("PRIVLEDGER_TIMEOUT", "2.5")
    hook = make_pre_spawn_hook()
    s = hook.settings
    assert s.on_unavailable == "refuse" and s.timeout == 2.5
    assert s.target.target == f"127.0.0.1:{server.port}" and not s.target.tls
    sp = make_spawner(username)
    run(hook, sp)
    assert sp.privledger_decision.decision_id


def test_arguments_beat_environment(server, spawner_token, monkeypatch):
    monkeypatch.setenv("PRIVLEDGER_ON_UNAVAILABLE", "refuse")
    monkeypatch.setenv("PRIVLEDGER_TOKEN_FILE", "/nonexistent")
    hook = make_pre_spawn_hook(server=server.url, token=spawner_token, on_unavailable="deny")
    assert hook.settings.on_unavailable == "deny"


@pytest.mark.parametrize(
    "kwargs, env, match",
    [
        ({"on_unavailable": "maybe"}, {"PRIVLEDGER_TOKEN": "t"}, "deny' or 'refuse"),
        ({}, {}, "no token"),
        ({"token_file": "/nonexistent/privledger.token"}, {}, "cannot read the token file"),
        ({"token": "t", "token_file": "/x"}, {}, "not both"),
        ({"timeout": "soon"}, {"PRIVLEDGER_TOKEN": "t"}, "timeout"),
        ({"timeout": 0}, {"PRIVLEDGER_TOKEN": "t"}, "positive"),
        ({"server": "ftp://x"}, {"PRIVLEDGER_TOKEN": "t"}, "unsupported server"),
    ],
)
def test_bad_configuration_fails_at_startup(kwargs, env, match, monkeypatch):
    for k in ("PRIVLEDGER_TOKEN", "PRIVLEDGER_TOKEN_FILE", "PRIVLEDGER_ON_UNAVAILABLE",
              "PRIVLEDGER_TIMEOUT", "PRIVLEDGER_SERVER"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        make_pre_spawn_hook(**kwargs)


def test_one_channel_serves_every_spawn_of_a_hub(server, hook, make_spawner, username):
    """The hub's event loop keeps one channel: a spawn does not connect anew."""
    async def spawns():
        for _ in range(3):
            await hook(make_spawner(username))
    asyncio.run(spawns())
    assert hook.settings.channels.created == 1
    assert len(decisions_for(server, username)) == 3


def test_an_existing_hook_runs_first_and_cannot_give_the_socket(server, spawner_token_file,
                                                                make_spawner, username):
    order = []

    def legacy(spawner):  # what a hub had before: the socket for "trusted" users
        order.append("legacy")
        spawner.volumes["/var/run/docker.sock"] = "/var/run/docker.sock"
        spawner.environment["TEAM"] = "physics"

    async def legacy_async(spawner):
        order.append("async")

    for before in (legacy, legacy_async):
        h = make_pre_spawn_hook(server=server.url, token_file=str(spawner_token_file),
                                timeout=5, before=before)
        sp = make_spawner(username)
        run(h, sp)
        assert sp.privledger_decision is not None
        assert "/var/run/docker.sock" not in sp.volumes
        assert "/var/run/docker.sock" not in sp.extra_host_config["binds"]
        if before is legacy:
            assert sp.environment["TEAM"] == "physics", "what it set otherwise is kept"
    assert order == ["legacy", "async"]


def test_a_failing_existing_hook_fails_the_spawn_before_privledger_is_asked(
        server, spawner_token_file, make_spawner, username):
    def broken(spawner):
        raise RuntimeError("legacy hook failed")

    h = make_pre_spawn_hook(server=server.url, token_file=str(spawner_token_file),
                            timeout=5, before=broken)
    with pytest.raises(RuntimeError, match="legacy hook failed"):
        run(h, make_spawner(username))
    assert decisions_for(server, username) == []
