"""JupyterHub group sync: privledger's synced groups follow the hub's groups.

Membership stays where operators manage it (the admin panel, the REST API, an
authenticator's ``manage_groups``); each difference becomes one privledger entry whose
actor is the sync's token, with a reason naming the hub group. Run it as a JupyterHub
managed service (the hub then sets ``JUPYTERHUB_API_URL`` and ``JUPYTERHUB_API_TOKEN``)::

    c.JupyterHub.services = [{
        "name": "privledger-sync",
        "command": [sys.executable, "-m", "privledger_jupyterhub.sync"],
        "environment": {
            "PRIVLEDGER_SERVER": "unix:/run/privledger/privledger.sock",
            "PRIVLEDGER_TOKEN_FILE": "/etc/jupyterhub/privledger-sync.token",
        },
    }]
    c.JupyterHub.load_roles = [{
        "name": "privledger-sync",
        "scopes": ["read:groups"],          # group names and their users; nothing else
        "services": ["privledger-sync"],
    }]

and mark each privledger group that follows the hub, once, as an admin::

    privledger token create hub-sync --role sync      # its secret goes in the token file
    privledger group sync docker-privileged on --reason "managed in the hub's admin panel"

=========================  ====================================================
environment                meaning (default)
=========================  ====================================================
JUPYTERHUB_API_URL         the hub's REST API (set by the hub)
JUPYTERHUB_API_TOKEN       the service's hub token (set by the hub)
PRIVLEDGER_SERVER          the privledger server (http://127.0.0.1:50051)
PRIVLEDGER_TOKEN           a ``sync`` token's secret, or
PRIVLEDGER_TOKEN_FILE      a file holding it (reread at every pass)
PRIVLEDGER_CA_FILE         CA of an https:// server (system roots)
PRIVLEDGER_CLIENT_CERT_FILE, PRIVLEDGER_CLIENT_KEY_FILE  mutual TLS (none)
PRIVLEDGER_SYNC_GROUPS     privledger groups to sync, comma-separated, each
                           ``GROUP`` or ``GROUP=HUBGROUP`` (every group privledger
                           marks synced, each following the hub group of its name)
PRIVLEDGER_SYNC_INTERVAL   seconds between passes (5)
=========================  ====================================================

A hub group that does not exist is left alone (logged), never read as "no members":
deleting a group in the hub does not empty privledger's. A pass that fails backs off
(doubling, up to a minute) and the next one starts again from both sides' state, so a
restart or a retry appends nothing twice: each change carries a request id derived
from the change and the ledger position it was computed at.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import grpc

from ._proto.privledger.v1 import privledger_pb2 as pb
from ._proto.privledger.v1 import privledger_pb2_grpc as pb_grpc
from .client import DEFAULT_SERVER, Target, token_from_file

log = logging.getLogger("privledger_jupyterhub.sync")

ENV_GROUPS = "PRIVLEDGER_SYNC_GROUPS"
ENV_INTERVAL = "PRIVLEDGER_SYNC_INTERVAL"
MAX_BACKOFF = 60.0


@dataclass
class SyncSettings:
    hub_api: str
    hub_token: str
    target: Target
    token: Callable[[], str]
    #: privledger group -> hub group; empty: every group privledger marks synced.
    groups: dict[str, str] = field(default_factory=dict)
    interval: float = 5.0
    timeout: float = 10.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: More nodes of a privledger cluster, used in turn when the current one is
    #: unreachable (the changes' request ids make a repeat through another node safe).
    fallbacks: tuple[Target, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "SyncSettings":
        env = os.environ if env is None else env
        hub_api = env.get("JUPYTERHUB_API_URL", "").rstrip("/")
        hub_token = env.get("JUPYTERHUB_API_TOKEN", "")
        if not hub_api or not hub_token:
            raise ValueError(
                "privledger sync: JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are not set; "
                "run it as a JupyterHub managed service (c.JupyterHub.services)"
            )
        if env.get("PRIVLEDGER_TOKEN"):
            secret = env["PRIVLEDGER_TOKEN"].strip()
            token: Callable[[], str] = lambda: secret  # noqa: E731
        elif env.get("PRIVLEDGER_TOKEN_FILE"):
            token = token_from_file(env["PRIVLEDGER_TOKEN_FILE"])
            token()  # a missing or empty file stops the service at start
        else:
            raise ValueError(
                "privledger sync: no token; create one with `privledger token create "
                "hub-sync --role sync` and set PRIVLEDGER_TOKEN_FILE"
            )
        groups: dict[str, str] = {}
        for item in (env.get(ENV_GROUPS) or "").split(","):
            item = item.strip()
            if not item:
                continue
            ours, _, theirs = item.partition("=")
            groups[ours.strip()] = (theirs or ours).strip()
        try:
            interval = float(env.get(ENV_INTERVAL) or 5)
        except ValueError:
            raise ValueError(f"privledger sync: {ENV_INTERVAL} must be a number of seconds")
        if not interval > 0:
            raise ValueError(f"privledger sync: {ENV_INTERVAL} must be positive")
        servers = [
            s for s in (env.get("PRIVLEDGER_SERVER") or DEFAULT_SERVER).split(",") if s.strip()
        ]
        targets = [Target.parse(s) for s in servers] or [Target.parse(DEFAULT_SERVER)]
        cert = env.get("PRIVLEDGER_CLIENT_CERT_FILE") or None
        key = env.get("PRIVLEDGER_CLIENT_KEY_FILE") or None
        for tg in targets:
            tg.check_client_cert(cert, key)
        return cls(
            hub_api=hub_api,
            hub_token=hub_token,
            target=targets[0],
            fallbacks=tuple(targets[1:]),
            token=token,
            groups=groups,
            interval=interval,
            ca_file=env.get("PRIVLEDGER_CA_FILE") or None,
            cert_file=cert,
            key_file=key,
        )

    def targets(self) -> list[Target]:
        """Every node, in the order they are tried."""
        return [self.target, *self.fallbacks]

    def channel(self, target: Target | None = None) -> grpc.Channel:
        """A blocking channel (the service is a plain loop, not an event loop)."""
        target = target or self.target
        if target.tls:
            read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
            creds = grpc.ssl_channel_credentials(
                root_certificates=read(self.ca_file),
                private_key=read(self.key_file),
                certificate_chain=read(self.cert_file),
            )
            return grpc.secure_channel(target.target, creds)
        return grpc.insecure_channel(target.target)


class HubError(RuntimeError):
    """The hub's REST API did not answer as expected."""


def hub_group_users(settings: SyncSettings, group: str) -> set[str] | None:
    """The users of the hub group, or None when the hub has no such group."""
    url = f"{settings.hub_api}/groups/{urllib.parse.quote(group, safe='')}"
    req = urllib.request.Request(
        url,
        headers={"Authorization": f"token {settings.hub_token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=settings.timeout) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise HubError(f"GET {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise HubError(f"GET {url}: {e}") from e
    users = body.get("users") if isinstance(body, dict) else None
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise HubError(f"GET {url}: no list of user names in the answer")
    return set(users)


def request_id(action: str, group: str, user: str, basis: int) -> str:
    """The same change computed at the same ledger position gets the same id, so a
    retry or a restart replays instead of appending; a later, separate change of the
    same member (re-added after a removal) is computed at a later position."""
    digest = hashlib.sha256(f"{action}\0{group}\0{user}\0{basis}".encode()).hexdigest()
    return f"hubsync-{digest[:40]}"


@dataclass
class Change:
    group: str
    user: str
    added: bool
    seq: int
    replayed: bool


def reconcile_once(settings: SyncSettings, stub: pb_grpc.AdminStub) -> list[Change]:
    """One pass: every synced group made equal to its hub group. Returns the changes."""
    md = (("authorization", f"Bearer {settings.token()}"),)
    listing = stub.ListGroups(pb.ListGroupsRequest(), metadata=md, timeout=settings.timeout)
    synced = {g.name for g in listing.groups if g.synced}
    wanted = settings.groups or {name: name for name in sorted(synced)}
    changes: list[Change] = []
    for ours, theirs in wanted.items():
        if ours not in synced:
            log.warning(
                "privledger sync: privledger group %r is not marked synced; an admin "
                "marks it with `privledger group sync %s on --reason ...`",
                ours,
                ours,
            )
            continue
        hub = hub_group_users(settings, theirs)
        if hub is None:
            log.warning(
                "privledger sync: the hub has no group %r; privledger group %r is left as it is",
                theirs,
                ours,
            )
            continue
        current = set(
            stub.GetGroup(pb.GetGroupRequest(name=ours), metadata=md, timeout=settings.timeout).members
        )
        for user, added in [(u, True) for u in sorted(hub - current)] + [
            (u, False) for u in sorted(current - hub)
        ]:
            why = (
                f"jupyterhub sync: added in hub group {theirs}"
                if added
                else f"jupyterhub sync: removed from hub group {theirs}"
            )
            req = pb.MemberRequest(
                group=ours,
                user=user,
                reason=why,
                request_id=request_id("add" if added else "remove", ours, user, listing.seq),
            )
            call = stub.AddMember if added else stub.RemoveMember
            try:
                r = call(req, metadata=md, timeout=settings.timeout)
            except grpc.RpcError as e:
                # A user name privledger refuses (its input rules) must not stop the
                # other changes; anything else ends the pass.
                if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.error("privledger sync: %s %r in %r refused: %s", "adding" if added else "removing", user, ours, e.details())
                    continue
                raise
            changes.append(Change(ours, user, added, r.seq, r.replayed))
            log.info(
                "privledger sync: %s %r %s %r (seq %d%s)",
                "added" if added else "removed",
                user,
                "to" if added else "from",
                ours,
                r.seq,
                ", already recorded" if r.replayed else "",
            )
    return changes


def run(settings: SyncSettings, passes: int | None = None) -> None:
    """Reconciles at start, then every ``interval`` seconds; backs off on errors."""
    delay = settings.interval
    n = 0
    targets = settings.targets()
    at = 0
    channel = settings.channel(targets[at])
    try:
        while passes is None or n < passes:
            n += 1
            try:
                reconcile_once(settings, pb_grpc.AdminStub(channel))
                delay = settings.interval
            except (grpc.RpcError, HubError, OSError, ValueError) as e:
                unreachable = isinstance(e, grpc.RpcError) and e.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                detail = e.details() if isinstance(e, grpc.RpcError) else str(e)
                if unreachable and len(targets) > 1:
                    # Another node of the cluster: at once, unless every one failed.
                    at = (at + 1) % len(targets)
                    channel.close()
                    channel = settings.channel(targets[at])
                    log.error("privledger sync: pass failed (%s); trying %s", detail,
                              targets[at].display)
                    if at != 0:
                        n -= 1  # the same pass, through the next node
                        continue
                delay = min(max(delay * 2, settings.interval), MAX_BACKOFF)
                log.error("privledger sync: pass failed (%s); next in %.0f s", detail, delay)
            if passes is None or n < passes:
                time.sleep(delay)
    finally:
        channel.close()


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("PRIVLEDGER_SYNC_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        settings = SyncSettings.from_env()
    except ValueError as e:
        print(e, file=sys.stderr)
        return 64
    log.info(
        "privledger sync: following %s every %g s (groups: %s)",
        settings.hub_api,
        settings.interval,
        ", ".join(f"{a}={b}" for a, b in settings.groups.items()) or "every synced group",
    )
    try:
        run(settings)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
