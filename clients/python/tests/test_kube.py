"""The KubeSpawner modify_pod_hook against a real privledger server: the real
jupyterhub-kubespawner package builds each pod with its own get_pod_manifest()
(offline: KubeSpawner(_mock=True), its kubeconfig naming a cluster at
https://127.0.0.1:1 that nothing answers), the hook applies the decision, and the
serialized pod is checked. Skipped without KubeSpawner unless
PRIVLEDGER_REQUIRE_KUBESPAWNER=1 (ci.sh installs it and sets it)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest

from privledger_jupyterhub import PrivledgerUnavailable, make_modify_pod_hook

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- {name: c, cluster: {server: "https://127.0.0.1:1"}}
contexts:
- {name: x, context: {cluster: c, user: u}}
current-context: x
users:
- {name: u, user: {token: unused}}
"""

# The Kubernetes client reads KUBECONFIG when it is imported: set it first.
_kubedir = Path(tempfile.mkdtemp(prefix="privledger-kube-"))
(_kubedir / "kubeconfig").write_text(KUBECONFIG)
os.environ["KUBECONFIG"] = str(_kubedir / "kubeconfig")

if os.environ.get("PRIVLEDGER_REQUIRE_KUBESPAWNER") == "1":
    import kubespawner  # noqa: F401 - must be there
else:
    pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed")

SOCKET = "/var/run/docker.sock"
LIMITED_HOST = "/run/privledger/users/{user}"


class Log(logging.Logger):
    """A real logger (KubeSpawner wants one) that keeps what it was told."""

    def __init__(self, name: str) -> None:
        super().__init__(f"privledger-kube-test-{name}", logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def handle(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))

    def text(self, min_level: int = logging.DEBUG) -> str:
        return "\n".join(m for lvl, m in self.lines if lvl >= min_level)


def pod_for(hook, user: str, log, **config) -> tuple[dict, object]:
    """KubeSpawner's own pod for ``user`` with the hook applied, serialized."""
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    async def go():
        u = mock.Mock()
        u.name = user
        u.escaped_name = user
        u.id = 1
        u.url = f"/user/{user}/"
        u.orm_user = None
        hub = mock.Mock()
        hub.public_host = ""
        hub.url = "http://hub:8081/hub/"
        hub.base_url = "/hub/"
        hub.api_url = "http://hub:8081/hub/api"
        spawner = KubeSpawner(_mock=True, user=u, hub=hub, **config)
        spawner.log = log
        spawner.modify_pod_hook = hook
        pod = await spawner.get_pod_manifest()
        pod = await spawner.modify_pod_hook(spawner, pod)
        api = ApiClient()
        try:
            return api.sanitize_for_serialization(pod), spawner
        finally:
            await api.close()

    return asyncio.run(go())


@pytest.fixture
def hook(server, spawner_token_file):
    return make_modify_pod_hook(server=server.url, token_file=str(spawner_token_file), timeout=5)


def volumes(pod: dict) -> dict:
    return {v["name"]: v for v in pod["spec"].get("volumes") or []}


def mounts(pod: dict) -> dict:
    return {m["name"]: m for m in pod["spec"]["containers"][0].get("volumeMounts") or []}


def host_paths(pod: dict) -> set:
    return {v["hostPath"]["path"] for v in volumes(pod).values() if "hostPath" in v}


def env(pod: dict) -> dict:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or []}


def privileged(pod: dict) -> bool:
    return bool((pod["spec"]["containers"][0].get("securityContext") or {}).get("privileged"))


def assert_decided(pod: dict, spawner, user: str):
    d = spawner.privledger_decision
    assert d is not None and d.decision_id
    assert pod["metadata"]["annotations"]["privledger.decision"] == d.decision_id
    assert pod["metadata"]["annotations"]["privledger.user"] == user
    assert pod["metadata"]["labels"]["privledger.decision"] == d.decision_id
    return d


def test_no_grant_no_socket(hook, username):
    log = Log(username)
    pod, sp = pod_for(hook, username, log)
    d = assert_decided(pod, sp, username)
    assert not d.allowed
    assert not host_paths(pod) and not privileged(pod) and "DOCKER_HOST" not in env(pod)


def test_raw_is_the_nodes_socket(server, hook, username):
    server.cli("grant", "issue", "--user", username, "--socket", "raw", "--mode", "ro",
               "--reason", "binderhub builds")
    log = Log(username)
    pod, sp = pod_for(hook, username, log)
    assert assert_decided(pod, sp, username).allowed
    (name,) = [n for n, v in volumes(pod).items() if v.get("hostPath", {}).get("path") == SOCKET]
    assert volumes(pod)[name]["hostPath"]["type"] == "Socket"
    assert mounts(pod)[name]["mountPath"] == SOCKET
    assert mounts(pod)[name]["readOnly"] is True
    assert not privileged(pod)


def test_limited_is_the_users_directory_and_docker_host(server, hook, username):
    server.cli("grant", "issue", "--user", username, "--socket", "limited", "--reason", "builds")
    log = Log(username)
    pod, sp = pod_for(hook, username, log, environment={"FOO": "bar"})
    assert assert_decided(pod, sp, username).allowed
    host = LIMITED_HOST.format(user=username)
    (name,) = [n for n, v in volumes(pod).items() if v.get("hostPath", {}).get("path") == host]
    assert volumes(pod)[name]["hostPath"]["type"] == "Directory"
    assert mounts(pod)[name]["mountPath"] == "/run/privledger"
    assert not mounts(pod)[name].get("readOnly")
    assert env(pod)["DOCKER_HOST"] == "unix:///run/privledger/docker.sock"
    assert env(pod)["FOO"] == "bar"
    assert SOCKET not in host_paths(pod)


def test_privileged_lifts_no_escalation(server, hook, username):
    server.cli("grant", "issue", "--user", username, "--privileged", "--reason", "fuse")
    log = Log(username)
    pod, sp = pod_for(hook, username, log)
    assert assert_decided(pod, sp, username).allowed
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["privileged"] is True
    assert sc.get("allowPrivilegeEscalation") is not False
    assert not host_paths(pod), "privileged alone gives no socket"


def test_an_admins_socket_mount_and_privileged_flag_are_removed(hook, username):
    log = Log(username)
    pod, sp = pod_for(
        hook,
        username,
        log,
        volumes=[
            {"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}},
            {"name": "run", "hostPath": {"path": "/run"}},
            {"name": "users", "hostPath": {"path": "/run/privledger/users/someone-else"}},
            {"name": "data", "hostPath": {"path": "/srv/data"}},
        ],
        volume_mounts=[
            {"name": "docker", "mountPath": "/var/run/docker.sock"},
            {"name": "run", "mountPath": "/host-run"},
            {"name": "users", "mountPath": "/x"},
            {"name": "data", "mountPath": "/data"},
        ],
        container_security_context={"privileged": True},
    )
    assert not assert_decided(pod, sp, username).allowed
    assert host_paths(pod) == {"/srv/data"}, "the user's own volume stays"
    assert set(mounts(pod)) == {"data"}
    assert not privileged(pod)
    warned = log.text(logging.WARNING)
    for path in ("/var/run/docker.sock", "/run", "/run/privledger/users/someone-else"):
        assert path in warned
    assert "made unprivileged" in warned


def test_unreachable_ledger_refuses_or_denies(spawner_token_file, username):
    refuse = make_modify_pod_hook(server="http://127.0.0.1:1", token_file=str(spawner_token_file),
                                  timeout=1, on_unavailable="refuse")
    with pytest.raises(PrivledgerUnavailable, match="refusing to start"):
        pod_for(refuse, username, Log(username),
                volumes=[{"name": "docker", "hostPath": {"path": SOCKET}}],
                volume_mounts=[{"name": "docker", "mountPath": SOCKET}])
    deny = make_modify_pod_hook(server="http://127.0.0.1:1", token_file=str(spawner_token_file),
                                timeout=1)
    pod, sp = pod_for(deny, username, Log(username),
                      volumes=[{"name": "docker", "hostPath": {"path": SOCKET}}],
                      volume_mounts=[{"name": "docker", "mountPath": SOCKET}])
    assert sp.privledger_decision is None
    assert not host_paths(pod) and not privileged(pod)
