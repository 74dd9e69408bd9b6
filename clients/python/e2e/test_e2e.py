"""End to end: JupyterHub + DockerSpawner + the privledger hook + a real Docker daemon.

Run through e2e/run.sh, which installs the pinned JupyterHub, DockerSpawner and
configurable-http-proxy and builds the user image. Environment:

  PRIVLEDGER_BIN             the privledger binary
  PRIVLEDGER_E2E_CHP         configurable-http-proxy executable
  PRIVLEDGER_E2E_IMAGE       the user image (busybox httpd on 8888)
  PRIVLEDGER_E2E=1           also check the Docker watcher's container entries
                             (create/start/die/destroy) in the audit trail
  PRIVLEDGER_E2E_SERVE_ARGS  extra `privledger serve` arguments (e.g. to turn the
                             Docker watcher on), split like a shell would
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from plserver import PrivledgerServer, free_port, privledger_bin  # noqa: E402

IMAGE = os.environ.get("PRIVLEDGER_E2E_IMAGE", "privledger-e2e-user:latest")
CHP = os.environ.get("PRIVLEDGER_E2E_CHP", "configurable-http-proxy")
WATCHER = os.environ.get("PRIVLEDGER_E2E") == "1"
SOCKET = "/var/run/docker.sock"
LIMITED_CONTAINER_SOCKET = "/run/privledger/docker.sock"
LIMITED_CONTAINER_DIR = "/run/privledger"
RUN_LABEL = "org.privledger.e2e-run"
PREFIX = "plg-e2e"

USERS = {
    "alice": "raw rw (docker-privileged)",
    "carol": "raw ro",
    "erin": "limited",
    "dave": "privileged",
    "bob": "nothing",
}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=60)


def inspect(name: str) -> dict | None:
    r = docker("inspect", name, check=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)[0]


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Hub:
    """A JupyterHub process driven through its REST API with a service token."""

    def __init__(self, workdir: Path, env: dict[str, str], sync_env: dict[str, str]):
        self.workdir = workdir
        self.env = env
        # The group sync, run by the hub as a managed service.
        self.sync_env = sync_env
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.token = uuid.uuid4().hex
        self.run_id = uuid.uuid4().hex[:12]
        self.log_path = workdir / "jupyterhub.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        homes = self.workdir / "homes"
        homes.mkdir(exist_ok=True)
        cfg = self.workdir / "jupyterhub_config.py"
        cfg.write_text(
            f"""
c = get_config()  # noqa
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{CHP!r}]
c.ConfigurableHTTPProxy.pid_file = {str(self.workdir / "proxy.pid")!r}
c.JupyterHub.db_url = "sqlite:///{self.workdir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(self.workdir / "cookie_secret")!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {uuid.uuid4().hex!r}
c.Authenticator.allow_all = True
import sys
c.JupyterHub.services = [
    {{"name": "e2e", "api_token": {self.token!r}}},
    {{
        "name": "privledger-sync",
        "command": [sys.executable, "-m", "privledger_jupyterhub.sync"],
        "environment": {self.sync_env!r},
    }},
]
c.JupyterHub.load_roles = [
    {{
        "name": "e2e-driver",
        "scopes": ["admin:users", "admin:servers", "list:users", "read:users", "admin:groups"],
        "services": ["e2e"],
    }},
    {{"name": "privledger-sync", "scopes": ["read:groups"], "services": ["privledger-sync"]}},
]

c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = {IMAGE!r}
c.DockerSpawner.prefix = {PREFIX!r}
c.DockerSpawner.remove = True
c.DockerSpawner.http_timeout = 30
c.DockerSpawner.start_timeout = 60
# The users' own storage, and the admin mistake the hook must undo for users
# without a grant: the daemon socket for everybody.
c.DockerSpawner.volumes = {{
    {str(homes)!r} + "/{{username}}": "/home/jovyan",
    "/var/run/docker.sock": "/var/run/docker.sock",
}}
c.DockerSpawner.extra_create_kwargs = {{"labels": {{{RUN_LABEL!r}: {self.run_id!r}}}}}

from privledger_jupyterhub import make_pre_spawn_hook
c.DockerSpawner.pre_spawn_hook = make_pre_spawn_hook()  # PRIVLEDGER_* from the environment
"""
        )
        return cfg

    def start(self) -> None:
        cfg = self.write_config()
        log = open(self.log_path, "ab")
        jupyterhub = Path(sys.executable).with_name("jupyterhub")
        self.proc = subprocess.Popen(
            [str(jupyterhub), "-f", str(cfg)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyterhub exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/hub/api/", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                return False

        try:
            wait_for(up, 90, "JupyterHub to answer")
        except AssertionError:
            raise AssertionError(f"JupyterHub did not come up:\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # The proxy is a child in the same session; make sure it is gone.
        pid_file = self.workdir / "proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/hub/api{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, {"raw": raw.decode(errors="replace")}

    def start_server(self, user: str) -> dict:
        status, body = self.api("POST", f"/users/{user}/server")
        assert status in (201, 202), f"start {user}: {status} {body}\n{self.log()}"

        def ready():
            _, model = self.api("GET", f"/users/{user}")
            srv = (model or {}).get("servers", {}).get("")
            if srv and srv.get("ready"):
                return srv
            if srv is None and status == 202 and "pending" not in json.dumps(model):
                raise AssertionError(f"spawn of {user} failed:\n{self.log()}")
            return None

        return wait_for(ready, 90, f"{user}'s server to be ready", interval=0.5)

    def stop_server(self, user: str) -> float:
        t0 = time.monotonic()
        status, body = self.api("DELETE", f"/users/{user}/server")
        assert status in (202, 204), f"stop {user}: {status} {body}"
        wait_for(lambda: inspect(container(user)) is None, 60, f"{user}'s container to go")
        return time.monotonic() - t0

    def fetch(self, user: str, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}/user/{user}/{path}", timeout=10) as r:
            return r.read().decode()


def container(user: str) -> str:
    return f"{PREFIX}-{user}"


def report(hub: Hub, user: str) -> dict[str, str]:
    text = hub.fetch(user, "api/privledger.txt")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def socket_binds(info: dict) -> list[str]:
    binds = info["HostConfig"].get("Binds") or []
    return [b for b in binds if "docker.sock" in b or b.split(":")[0] in ("/run", "/var/run")]


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def limited_dir(workdir) -> Path:
    """privledger's limited-socket directory: the proxy opens erin's socket in it when
    her spawn is decided, before the hook gets the answer."""
    d = workdir / "limited"
    d.mkdir(parents=True)
    yield d


@pytest.fixture(scope="module")
def ledger(workdir, limited_dir):
    binary = privledger_bin()
    if not binary.is_file():
        pytest.fail(f"privledger binary not found at {binary}", pytrace=False)
    extra = ["--limited-host-dir", str(limited_dir)]
    extra += shlex.split(os.environ.get("PRIVLEDGER_E2E_SERVE_ARGS", ""))
    srv = PrivledgerServer(workdir / "ledger", binary, extra_args=extra)
    srv.start()
    # docker-privileged follows the hub's group of the same name: its members come
    # through the group sync (the hub fixture adds alice in the hub).
    srv.cli("group", "sync", "docker-privileged", "on", "--reason",
            "e2e: membership is managed in the hub")
    sync_secret = srv.cli("token", "create", "hub-sync", "--role", "sync", as_json=True)["secret"]
    sync_file = workdir / "privledger-sync.token"
    sync_file.write_text(sync_secret + "\n")
    sync_file.chmod(0o600)
    srv.sync_token_file = sync_file
    srv.sync_secret = sync_secret
    srv.cli("grant", "issue", "--user", "carol", "--socket", "raw", "--mode", "ro",
            "--reason", "e2e: read-only socket")
    srv.cli("grant", "issue", "--user", "erin", "--socket", "limited",
            "--reason", "e2e: limited socket")
    srv.cli("grant", "issue", "--user", "dave", "--privileged", "--reason", "e2e: privileged")
    secret = srv.cli("token", "create", "jupyterhub", "--role", "spawner", as_json=True)["secret"]
    token_file = workdir / "privledger.token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o600)
    srv.spawner_token_file = token_file
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def hub(workdir, ledger, limited_dir):
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("the Docker daemon is not reachable (docker info failed)", pytrace=False)
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"user image {IMAGE} missing; e2e/run.sh builds it", pytrace=False)
    h = Hub(
        workdir,
        {
            "PRIVLEDGER_SERVER": ledger.url,
            "PRIVLEDGER_TOKEN_FILE": str(ledger.spawner_token_file),
            "PRIVLEDGER_ON_UNAVAILABLE": "deny",
            "PRIVLEDGER_TIMEOUT": "3",
            "PRIVLEDGER_LIMITED_HOST_DIR": str(limited_dir),
        },
        {
            "PRIVLEDGER_SERVER": ledger.url,
            "PRIVLEDGER_TOKEN_FILE": str(ledger.sync_token_file),
            "PRIVLEDGER_SYNC_INTERVAL": "0.5",
        },
    )
    for u in USERS:  # leftovers of an aborted earlier run
        docker("rm", "-f", container(u), check=False)
    h.start()
    status, body = h.api("POST", "/users", {"usernames": list(USERS)})
    assert status in (201, 409), (status, body)
    # alice gets the raw socket the way operators give it: the hub's group.
    status, body = h.api("POST", "/groups/docker-privileged")
    assert status in (201, 409), (status, body)
    status, body = h.api("POST", "/groups/docker-privileged/users", {"users": ["alice"]})
    assert status == 200, (status, body)
    wait_for(lambda: "alice" in members(ledger, "docker-privileged"), 60,
             f"the group sync to add alice:\n{h.log()}")
    yield h
    h.stop()
    out = docker("ps", "-aq", "--filter", f"label={RUN_LABEL}={h.run_id}", check=False).stdout.split()
    if out:
        docker("rm", "-f", *out, check=False)


@pytest.fixture(scope="module")
def privileged_ok() -> str | None:
    """None when this daemon can run privileged containers, else why not (a Docker
    daemon inside an unprivileged container cannot)."""
    r = docker("run", "--rm", "--privileged", IMAGE, "/bin/true", check=False)
    return None if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")


@pytest.fixture(scope="module")
def lifecycle(hub, ledger, privileged_ok):
    """Start and stop every user's server once; keep what was seen."""
    seen = {}
    for user in USERS:
        if user == "dave" and privileged_ok is not None:
            # The spawn must fail at `docker start`, after the hook asked for
            # --privileged: record the failure instead.
            status, body = hub.api("POST", f"/users/{user}/server")
            seen[user] = {"start_status": status, "start_body": body,
                          "hub_log": hub.log_path.read_text(errors="replace")}
            wait_for(lambda: inspect(container(user)) is None
                     or not inspect(container(user))["State"]["Running"], 60,
                     "dave's failed container")
            info = inspect(container(user))
            seen[user]["inspect"] = info
            hub.api("DELETE", f"/users/{user}/server")
            continue
        hub.start_server(user)
        info = inspect(container(user))
        assert info is not None, f"no container for {user}"
        seen[user] = {"inspect": info, "report": report(hub, user)}
    for user in USERS:
        if "start_status" not in seen[user]:
            seen[user]["stop_seconds"] = hub.stop_server(user)
    return seen


def members(ledger, group: str) -> list[str]:
    return ledger.cli("group", "show", group, as_json=True)["members"]


def sync_entries(ledger, user: str) -> list[dict]:
    return [e for e in ledger.audit("--subject", user)
            if e["event"]["kind"] in ("member_added", "member_removed")]


def decision_for(ledger, label: str) -> dict:
    entries = [e for e in ledger.audit("--kind", "spawn_decided")
               if e["event"]["decision_id"] == label]
    assert len(entries) == 1, f"decision {label} not in the audit trail"
    return entries[0]


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def check_common(lifecycle, ledger, user: str) -> tuple[dict, dict, dict]:
    info = lifecycle[user]["inspect"]
    labels = info["Config"]["Labels"]
    assert labels["privledger.user"] == user
    assert labels[RUN_LABEL], "the admin's own labels are kept"
    entry = decision_for(ledger, labels["privledger.decision"])
    assert entry["actor"] == "jupyterhub" and entry["event"]["user"] == user
    assert entry["event"]["image"] == IMAGE
    # The user's own volume survived the hook (binds merged, not replaced).
    assert any(b.endswith(":/home/jovyan:rw") for b in info["HostConfig"]["Binds"])
    assert lifecycle[user]["report"]["user"] == user
    # The TERM trap makes docker stop quick (no 10 s wait for KILL).
    assert lifecycle[user]["stop_seconds"] < 10
    return info, entry["event"], lifecycle[user]["report"]


def test_raw_rw_user_gets_the_socket(lifecycle, ledger):
    info, ev, rep = check_common(lifecycle, ledger, "alice")
    assert ev["allowed"] and ev["socket"] == "raw" and ev["socket_mode"] == "rw"
    assert socket_binds(info) == [f"{SOCKET}:{SOCKET}:rw"]
    assert info["HostConfig"]["Privileged"] is False
    assert rep["raw_socket"] == "yes"


def test_raw_ro_user_gets_a_read_only_socket(lifecycle, ledger):
    info, ev, rep = check_common(lifecycle, ledger, "carol")
    assert ev["socket_mode"] == "ro"
    assert socket_binds(info) == [f"{SOCKET}:{SOCKET}:ro"]
    assert rep["raw_socket"] == "yes"


def test_limited_user_gets_the_proxy_socket(lifecycle, ledger, limited_dir):
    info, ev, rep = check_common(lifecycle, ledger, "erin")
    assert ev["socket"] == "limited"
    # The user's directory is bound, not the socket file (the proxy re-creates it).
    assert f"{limited_dir}/erin:{LIMITED_CONTAINER_DIR}:rw" in info["HostConfig"]["Binds"]
    assert socket_binds(info) == []
    assert rep["raw_socket"] == "no" and rep["limited_socket"] == "yes"
    assert rep["docker_host"] == f"unix://{LIMITED_CONTAINER_SOCKET}"


def test_docker_answers_through_the_limited_users_socket(lifecycle, ledger, limited_dir):
    """erin's socket directory, bound into her container, holds a socket the proxy
    serves: `docker ps` through it answers, and lists none of the other users'
    containers; a refused call is answered and recorded (issue 15)."""
    sock = limited_dir / "erin" / "docker.sock"
    wait_for(sock.is_socket, 30, "erin's limited socket")
    r = subprocess.run(["docker", "-H", f"unix://{sock}", "ps", "-a", "--format", "{{.Names}}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    names = r.stdout.split()
    assert not any(n.startswith(PREFIX) for n in names), names
    # A call the limited socket refuses is answered, and recorded with its reason.
    r = subprocess.run(["docker", "-H", f"unix://{sock}", "network", "create", "--driver",
                        "macvlan", "e2e-refused"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r
    refused = [e for e in ledger.audit("--kind", "proxy_call", "--subject", "erin")
               if e["event"]["outcome"] == "refused"]
    assert refused, "the refused call through the limited socket is in the ledger"


def test_privileged_user_runs_privileged(lifecycle, ledger, privileged_ok):
    if privileged_ok is not None:
        # The hook asked for --privileged and the daemon refused to start it.
        seen = lifecycle["dave"]
        assert seen["start_status"] >= 400
        assert "OCI runtime create failed" in seen["hub_log"], seen["start_body"]
        ev = [e["event"] for e in ledger.audit("--kind", "spawn_decided", "--subject", "dave")]
        assert ev and ev[-1]["privileged"] and ev[-1]["allowed"]
        if seen["inspect"] is not None:
            assert seen["inspect"]["HostConfig"]["Privileged"] is True
        pytest.skip(f"this Docker daemon cannot run privileged containers: {privileged_ok}; "
                    "checked the decision and the refused start instead")
    info, ev, rep = check_common(lifecycle, ledger, "dave")
    assert ev["privileged"] and ev["socket"] == "none"
    assert info["HostConfig"]["Privileged"] is True
    assert socket_binds(info) == [], "the admin's socket volume was removed"
    assert rep["raw_socket"] == "no" and rep["privileged"] == "yes"


def test_user_without_grant_loses_the_admin_socket_volume(lifecycle, ledger):
    info, ev, rep = check_common(lifecycle, ledger, "bob")
    assert not ev["allowed"]
    assert socket_binds(info) == []
    assert not any(m.get("Source") in (SOCKET, "/run/docker.sock")
                   for m in info.get("Mounts", []))
    assert info["HostConfig"]["Privileged"] is False
    assert rep == {**rep, "raw_socket": "no", "limited_socket": "no", "docker_host": "",
                   "privileged": "no"}


@pytest.mark.skipif(not WATCHER, reason="needs the Docker watcher: set PRIVLEDGER_E2E=1")
def test_watcher_records_the_container_lifecycle(lifecycle, ledger, privileged_ok):
    """privledger's Docker watcher records create/start/die/destroy for each
    container, correlated with its decision, and raises no alert for them."""
    names = {container(u): u for u in USERS}

    def entries():
        out = {}
        for e in ledger.audit("--kind", "docker_container"):
            ev = e["event"]
            name = ev.get("name", "").lstrip("/")
            if name in names:
                out.setdefault(name, []).append(ev)
        return out

    seen_actions: dict[str, list[str]] = {}
    expected = {n: {"create", "start", "die", "destroy"} for n in names}
    if privileged_ok is not None:  # dave's container was created but never started
        expected[container("dave")] = {"create", "destroy"}

    def complete():
        got = entries()
        seen_actions.clear()
        seen_actions.update({n: [ev["action"] for ev in got.get(n, [])] for n in names})
        ok = all(expected[n] <= set(a) for n, a in seen_actions.items())
        return got if ok else None

    try:
        got = wait_for(complete, 30, "create/start/die/destroy entries for every container")
    except AssertionError as e:
        raise AssertionError(f"{e}; docker_container actions seen: {seen_actions}") from None
    for name, user in names.items():
        info = lifecycle[user]["inspect"]
        # dave's container may already be gone (its start failed): then the label
        # can only be read from what the watcher recorded at create.
        label = info["Config"]["Labels"]["privledger.decision"] if info else None
        for ev in got[name]:
            if ev["action"] in ("create", "start") and ev.get("inspected"):
                assert ev.get("user") == user
                if label is not None:
                    assert ev.get("decision_id") == label
                else:
                    assert ev.get("decision_id")
                assert bool(ev.get("socket_mounts")) == (user in ("alice", "carol"))
                assert ev["privileged"] == (user == "dave")
    alerts = [e for e in ledger.audit("--kind", "alert")
              if (e["event"].get("name") or "").lstrip("/") in names]
    assert alerts == [], f"unexpected alerts: {alerts}"


@pytest.mark.skipif(not WATCHER, reason="needs the Docker watcher: set PRIVLEDGER_E2E=1")
def test_removed_member_respawns_without_the_socket(lifecycle, hub, ledger):
    """alice leaves docker-privileged; her next spawn gets no socket. The trail then
    holds, in order, each decision followed by its container's create/start/die/destroy
    entries linked to it, and no alert."""
    # Removed in the hub, as an operator does in the admin panel.
    status, body = hub.api("DELETE", "/groups/docker-privileged/users", {"users": ["alice"]})
    assert status in (200, 204), (status, body)
    wait_for(lambda: "alice" not in members(ledger, "docker-privileged"), 60,
             "the group sync to remove alice")
    hub.start_server("alice")
    info = inspect(container("alice"))
    assert socket_binds(info) == []
    second = info["Config"]["Labels"]["privledger.decision"]
    hub.stop_server("alice")
    first = lifecycle["alice"]["inspect"]["Config"]["Labels"]["privledger.decision"]
    assert first != second

    def trail():
        out = []
        for e in ledger.audit("--subject", "alice"):
            ev = e["event"]
            if ev["kind"] == "spawn_decided":
                out.append((e["seq"], "decision", ev["decision_id"], ev["allowed"]))
            elif ev["kind"] == "docker_container" and ev.get("source") == "events":
                out.append((e["seq"], ev["action"], ev.get("decision_id"), None))
        done = [t for t in out if t[1] == "destroy" and t[2] == second]
        return out if done else None

    got = wait_for(trail, 30, "alice's second container to be destroyed")
    for decision, allowed in ((first, True), (second, False)):
        steps = [t for t in got if t[2] == decision]
        assert [t[1] for t in steps] == ["decision", "create", "start", "die", "destroy"], steps
        assert steps[0][3] is allowed
        assert [t[0] for t in steps] == sorted(t[0] for t in steps)
    alerts = [e for e in ledger.audit("--kind", "alert") if e["event"].get("user") == "alice"]
    assert alerts == [], alerts


def test_hub_group_changes_reach_the_ledger_and_a_running_container_is_flagged(
        lifecycle, hub, ledger):
    """Issue 15: frank is added to docker-privileged through the hub's REST API and
    gets the socket at his next spawn, with the sync's entry in the ledger; removed
    through the REST API while his server runs, the ledger records the removal and
    then his container's stale_grant alert; his next spawn has no socket. A new sync
    process finds nothing to do, and the sync token cannot touch another group."""
    status, body = hub.api("POST", "/users/frank")
    assert status in (201, 409), (status, body)
    docker("rm", "-f", container("frank"), check=False)
    status, body = hub.api("POST", "/groups/docker-privileged/users", {"users": ["frank"]})
    assert status == 200, (status, body)
    (added,) = wait_for(lambda: sync_entries(ledger, "frank") or None, 60,
                        "the group sync to add frank")
    assert added["actor"] == "hub-sync" and added["event"]["kind"] == "member_added"
    assert added["event"]["reason"] == "jupyterhub sync: added in hub group docker-privileged"
    hub.start_server("frank")
    try:
        info = inspect(container("frank"))
        assert socket_binds(info) == [f"{SOCKET}:{SOCKET}:rw"]
        status, body = hub.api("DELETE", "/groups/docker-privileged/users", {"users": ["frank"]})
        assert status in (200, 204), (status, body)
        entries = wait_for(lambda: e if len(e := sync_entries(ledger, "frank")) == 2 else None,
                           60, "the group sync to remove frank")
        removed = entries[1]
        assert removed["actor"] == "hub-sync" and removed["event"]["kind"] == "member_removed"
        assert removed["event"]["reason"] == "jupyterhub sync: removed from hub group docker-privileged"
        if WATCHER:
            def stale():
                return [e for e in ledger.audit("--kind", "stale_grant")
                        if e["event"].get("container_id") == info["Id"]] or None
            (alert,) = wait_for(stale, 60, "frank's stale_grant alert")
            assert alert["seq"] > removed["seq"], (alert, removed)
    finally:
        hub.stop_server("frank")
    hub.start_server("frank")
    try:
        assert socket_binds(inspect(container("frank"))) == []
    finally:
        hub.stop_server("frank")
    # A new sync process (as after a restart) appends nothing.
    from privledger_jupyterhub import sync
    from privledger_jupyterhub._proto.privledger.v1 import privledger_pb2_grpc as pb_grpc

    settings = sync.SyncSettings.from_env({
        "JUPYTERHUB_API_URL": f"{hub.url}/hub/api",
        "JUPYTERHUB_API_TOKEN": hub.token,
        "PRIVLEDGER_SERVER": ledger.url,
        "PRIVLEDGER_TOKEN_FILE": str(ledger.sync_token_file),
    })
    with settings.channel() as ch:
        assert sync.reconcile_once(settings, pb_grpc.AdminStub(ch)) == []
    assert len(sync_entries(ledger, "frank")) == 2
    # The sync token changes synced groups only.
    ledger.cli("group", "create", "e2e-not-synced")
    r = subprocess.run(
        [str(privledger_bin()), "group", "add-member", "e2e-not-synced", "frank",
         "--server", ledger.url, "--token", ledger.sync_secret],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 77 and "PERMISSION_DENIED" in r.stderr, r


def test_ledger_down_spawns_without_privileges(lifecycle, hub, ledger):
    """Last: stops the ledger. on_unavailable=deny starts alice's server anyway,
    without the socket she is granted, and without decision labels."""
    ledger.stop()
    hub.start_server("alice")
    try:
        info = inspect(container("alice"))
        assert socket_binds(info) == []
        assert "privledger.decision" not in info["Config"]["Labels"]
        assert report(hub, "alice")["raw_socket"] == "no"
        assert "WITHOUT Docker privileges (on_unavailable=deny)" in hub.log()
    finally:
        hub.stop_server("alice")
