"""The group sync against a real privledger server and a hub REST API served here.

The hub side is a small HTTP server answering GET /hub/api/groups/NAME the way
JupyterHub does (and 404 for a group it does not have), checking the service token;
the real hub is exercised by the end-to-end test (e2e/).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from privledger_jupyterhub import sync
from privledger_jupyterhub._proto.privledger.v1 import privledger_pb2_grpc as pb_grpc

HUB_TOKEN = "hub-service-token"


class FakeHub:
    def __init__(self) -> None:
        self.groups: dict[str, list[str]] = {}
        self.requests = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub.requests += 1
                if self.headers.get("Authorization") != f"token {HUB_TOKEN}":
                    self.send_response(403)
                    self.end_headers()
                    return
                prefix = "/hub/api/groups/"
                name = self.path[len(prefix):] if self.path.startswith(prefix) else None
                if name is None or name not in hub.groups:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps({"kind": "group", "name": name, "users": hub.groups[name]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/hub/api"

    def close(self) -> None:
        self.http.shutdown()


@pytest.fixture
def hub():
    h = FakeHub()
    yield h
    h.close()


@pytest.fixture
def sync_token(server, request):
    name = f"sync-{request.node.name[:30]}".replace("_", "-")
    return server.cli("token", "create", name, "--role", "sync", as_json=True)["secret"], name


def settings_for(server, hub, secret, groups=""):
    return sync.SyncSettings.from_env(
        {
            "JUPYTERHUB_API_URL": hub.api,
            "JUPYTERHUB_API_TOKEN": HUB_TOKEN,
            "PRIVLEDGER_SERVER": server.url,
            "PRIVLEDGER_TOKEN": secret,
            "PRIVLEDGER_SYNC_GROUPS": groups,
        }
    )


def head(server) -> int:
    return server.cli("audit", "head", as_json=True)["seq"]


def members(server, group) -> set[str]:
    return set(server.cli("group", "show", group, as_json=True)["members"])


def run_pass(settings):
    with settings.channel() as ch:
        return sync.reconcile_once(settings, pb_grpc.AdminStub(ch))


def test_synced_groups_follow_the_hub_and_a_restart_appends_nothing(server, hub, sync_token):
    secret, token_name = sync_token
    server.cli("group", "create", "hub-gpu")
    server.cli("group", "sync", "hub-gpu", "on", "--reason", "managed in the admin panel")
    server.cli("group", "create", "not-synced")
    hub.groups = {"hub-gpu": ["alice", "bob"], "not-synced": ["mallory"]}
    s = settings_for(server, hub, secret)

    changes = run_pass(s)
    assert sorted((c.user, c.added) for c in changes) == [("alice", True), ("bob", True)]
    assert members(server, "hub-gpu") == {"alice", "bob"}
    assert members(server, "not-synced") == set(), "only groups privledger marks synced"
    entries = server.audit("--kind", "member_added", "--subject", "hub-gpu")
    assert {e["event"]["user"] for e in entries} == {"alice", "bob"}
    assert all(e["actor"] == token_name for e in entries)
    assert all(e["event"]["reason"] == "jupyterhub sync: added in hub group hub-gpu" for e in entries)

    # Nothing changed: another pass, and a new sync process, append nothing.
    before = head(server)
    assert run_pass(s) == []
    assert run_pass(settings_for(server, hub, secret)) == []
    assert head(server) == before

    # Removed in the hub: removed here, with the reason; re-added later: added again.
    hub.groups["hub-gpu"] = ["bob"]
    (c,) = run_pass(s)
    assert (c.user, c.added, c.replayed) == ("alice", False, False)
    removed = server.audit("--kind", "member_removed", "--subject", "alice")[-1]
    assert removed["event"]["reason"] == "jupyterhub sync: removed from hub group hub-gpu"
    hub.groups["hub-gpu"] = ["alice", "bob"]
    (c,) = run_pass(s)
    assert (c.user, c.added, c.replayed) == ("alice", True, False)
    assert members(server, "hub-gpu") == {"alice", "bob"}


def test_a_retry_of_the_same_change_is_a_replay(server, hub, sync_token):
    secret, _ = sync_token
    server.cli("group", "create", "hub-retry")
    server.cli("group", "sync", "hub-retry", "on", "--reason", "r")
    s = settings_for(server, hub, secret, groups="hub-retry")
    listing_seq = head(server)
    rid = sync.request_id("add", "hub-retry", "carol", listing_seq)
    with s.channel() as ch:
        stub = pb_grpc.AdminStub(ch)
        md = (("authorization", f"Bearer {secret}"),)
        from privledger_jupyterhub._proto.privledger.v1 import privledger_pb2 as pb

        req = pb.MemberRequest(
            group="hub-retry", user="carol", reason="jupyterhub sync: added in hub group hub-retry", request_id=rid
        )
        first = stub.AddMember(req, metadata=md)
        again = stub.AddMember(req, metadata=md)
    assert again.replayed and again.seq == first.seq


def test_a_missing_hub_group_leaves_privledger_alone_and_a_mapping_is_followed(server, hub, sync_token):
    secret, _ = sync_token
    server.cli("group", "create", "pl-admins")
    server.cli("group", "sync", "pl-admins", "on", "--reason", "r")
    hub.groups = {}
    s = settings_for(server, hub, secret, groups="pl-admins=hub-admins")
    assert run_pass(s) == []
    hub.groups = {"hub-admins": ["dave"]}
    (c,) = run_pass(s)
    assert (c.group, c.user) == ("pl-admins", "dave")
    hub.groups = {}  # the hub group deleted: privledger's is not emptied
    assert run_pass(s) == []
    assert members(server, "pl-admins") == {"dave"}


def test_errors_back_off_and_bad_settings_stop_the_service(server, hub, sync_token):
    secret, _ = sync_token
    with pytest.raises(ValueError, match="managed service"):
        sync.SyncSettings.from_env({"PRIVLEDGER_TOKEN": secret})
    with pytest.raises(ValueError, match="no token"):
        sync.SyncSettings.from_env({"JUPYTERHUB_API_URL": hub.api, "JUPYTERHUB_API_TOKEN": "x"})
    # A hub that refuses the service token: the pass fails (HubError), nothing changes.
    server.cli("group", "create", "hub-refused")
    server.cli("group", "sync", "hub-refused", "on", "--reason", "r")
    hub.groups = {"hub-refused": ["erin"]}
    s = settings_for(server, hub, secret, groups="hub-refused")
    s.hub_token = "wrong"
    with pytest.raises(sync.HubError, match="403"):
        run_pass(s)
    s.interval = 0.01
    sync.run(s, passes=2)  # logs and backs off instead of raising
    assert members(server, "hub-refused") == set()
    # A sync token cannot touch a group that is not synced.
    server.cli("group", "create", "plain")
    with s.channel() as ch:
        from privledger_jupyterhub._proto.privledger.v1 import privledger_pb2 as pb

        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.AdminStub(ch).AddMember(
                pb.MemberRequest(group="plain", user="x", reason="r"),
                metadata=(("authorization", f"Bearer {secret}"),),
            )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_unreachable_node_is_passed_over_for_the_next(server, hub, sync_token):
    from plserver import free_port

    secret, _ = sync_token
    server.cli("group", "create", "hub-failover")
    server.cli("group", "sync", "hub-failover", "on", "--reason", "r")
    hub.groups = {"hub-failover": ["carol"]}
    s = sync.SyncSettings.from_env(
        {
            "JUPYTERHUB_API_URL": hub.api,
            "JUPYTERHUB_API_TOKEN": HUB_TOKEN,
            "PRIVLEDGER_SERVER": f"http://127.0.0.1:{free_port()},{server.url}",
            "PRIVLEDGER_TOKEN": secret,
        }
    )
    assert len(s.targets()) == 2
    sync.run(s, passes=1)
    assert members(server, "hub-failover") == {"carol"}
