"""The DockerSpawner ``pre_spawn_hook``: ask privledger, apply the answer.

    from privledger_jupyterhub import make_pre_spawn_hook
    c.DockerSpawner.pre_spawn_hook = make_pre_spawn_hook()

Every argument of :func:`make_pre_spawn_hook` falls back to an environment
variable, then to a default:

=================  ===========================  ===============================
argument           environment                  default
=================  ===========================  ===============================
server             PRIVLEDGER_SERVER            http://127.0.0.1:50051
token              PRIVLEDGER_TOKEN             (none)
token_file         PRIVLEDGER_TOKEN_FILE        (none; one of the two is needed)
on_unavailable     PRIVLEDGER_ON_UNAVAILABLE    deny
timeout            PRIVLEDGER_TIMEOUT           5 (seconds)
host_socket        PRIVLEDGER_HOST_SOCKET       /var/run/docker.sock
limited_host_dir   PRIVLEDGER_LIMITED_HOST_DIR  /run/privledger/users
ca_file            PRIVLEDGER_CA_FILE           system roots (https:// only)
cert_file          PRIVLEDGER_CLIENT_CERT_FILE  (none; https:// only)
key_file           PRIVLEDGER_CLIENT_KEY_FILE   (none; https:// only)
=================  ===========================  ===============================

``cert_file`` and ``key_file`` are a client certificate chain and its private key
(PEM), for a privledger server that requires mutual TLS (``--tls-client-ca``): give
both or neither, and only with an ``https://`` server. The server records the
certificate's identity with every decision the hook obtains. The CA, certificate and
key files are reread at every spawn, so they can be replaced in place.

``host_socket`` and ``limited_host_dir`` take the same values as the privledger
server's settings of the same names; the hook only uses them to recognise socket
binds it must remove.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

import grpc
import grpc.aio

from .client import (
    DEFAULT_SERVER,
    ChannelCache,
    Target,
    authorize_spawn,
    new_request_id,
    token_from_file,
)
from .fragments import DEFAULT_LIMITED_HOST_DIR, Fragments, SocketGuard, apply_fragments

ON_UNAVAILABLE = ("deny", "refuse")
DEFAULT_TIMEOUT = 5.0

ENV_SERVER = "PRIVLEDGER_SERVER"
ENV_TOKEN = "PRIVLEDGER_TOKEN"
ENV_TOKEN_FILE = "PRIVLEDGER_TOKEN_FILE"
ENV_ON_UNAVAILABLE = "PRIVLEDGER_ON_UNAVAILABLE"
ENV_TIMEOUT = "PRIVLEDGER_TIMEOUT"
ENV_HOST_SOCKET = "PRIVLEDGER_HOST_SOCKET"
ENV_LIMITED_HOST_DIR = "PRIVLEDGER_LIMITED_HOST_DIR"
ENV_CA_FILE = "PRIVLEDGER_CA_FILE"
ENV_CLIENT_CERT_FILE = "PRIVLEDGER_CLIENT_CERT_FILE"
ENV_CLIENT_KEY_FILE = "PRIVLEDGER_CLIENT_KEY_FILE"


class PrivledgerUnavailable(RuntimeError):
    """No decision could be obtained and the hook is set to refuse the spawn."""


@dataclass(frozen=True)
class HookSettings:
    target: Target
    token: Callable[[], str]
    on_unavailable: str
    timeout: float
    guard: SocketGuard
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: The channel reused across spawns.
    channels: ChannelCache | None = None
    #: More nodes of a privledger cluster, asked in turn when one is unreachable,
    #: each with its channel.
    fallbacks: tuple[tuple[Target, ChannelCache], ...] = ()

    def nodes(self) -> list[tuple[Target, ChannelCache | None]]:
        """Every node to ask, in order."""
        return [(self.target, self.channels), *self.fallbacks]


def _pick(value: Any, env: Mapping[str, str], name: str) -> Any:
    if value is not None:
        return value
    v = env.get(name)
    return v if v not in (None, "") else None


def resolve_settings(
    server: str | Iterable[str] | None = None,
    token: str | None = None,
    *,
    token_file: str | os.PathLike | None = None,
    on_unavailable: str | None = None,
    timeout: float | str | None = None,
    host_socket: str | Iterable[str] | None = None,
    limited_host_dir: str | None = None,
    ca_file: str | None = None,
    cert_file: str | os.PathLike | None = None,
    key_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> HookSettings:
    """Arguments first, then the environment, then defaults. Raises ValueError on
    a bad setting, so a broken configuration stops the Hub at start-up rather than
    at the first spawn."""
    env = os.environ if env is None else env

    server = _pick(server, env, ENV_SERVER) or DEFAULT_SERVER
    # Several nodes of a cluster: a list, or addresses separated by commas.
    addresses = (
        [s for s in str(server).split(",") if s.strip()]
        if isinstance(server, str)
        else [str(s) for s in server]
    )
    if not addresses:
        raise ValueError("privledger: the server address is empty")
    targets = [Target.parse(a) for a in addresses]
    target = targets[0]

    # An explicit argument beats the environment; token beats token_file.
    if token is not None or token_file is not None:
        if token is not None and token_file is not None:
            raise ValueError("privledger: pass token or token_file, not both")
        secret, path = token, token_file
    else:
        secret, path = _pick(None, env, ENV_TOKEN), _pick(None, env, ENV_TOKEN_FILE)
    if secret is not None:
        secret = str(secret).strip()
        if not secret:
            raise ValueError("privledger: the token is empty")
        provider: Callable[[], str] = lambda: secret  # noqa: E731
    elif path is not None:
        provider = token_from_file(path)
        try:
            provider()
        except (OSError, ValueError) as e:
            raise ValueError(f"privledger: cannot read the token file: {e}") from e
    else:
        raise ValueError(
            "privledger: no token; create one with `privledger token create hub "
            f"--role spawner` and pass token_file= (or set {ENV_TOKEN_FILE} or {ENV_TOKEN})"
        )

    mode = str(_pick(on_unavailable, env, ENV_ON_UNAVAILABLE) or "deny").strip().lower()
    if mode not in ON_UNAVAILABLE:
        raise ValueError(
            f"privledger: on_unavailable must be 'deny' or 'refuse', not {mode!r}"
        )

    t = _pick(timeout, env, ENV_TIMEOUT)
    try:
        seconds = DEFAULT_TIMEOUT if t is None else float(t)
    except (TypeError, ValueError):
        raise ValueError(f"privledger: timeout must be a number of seconds, not {t!r}")
    if not seconds > 0:
        raise ValueError(f"privledger: timeout must be positive, not {seconds}")

    hs = _pick(host_socket, env, ENV_HOST_SOCKET)
    sockets = [hs] if isinstance(hs, str) else list(hs or ())
    limited = _pick(limited_host_dir, env, ENV_LIMITED_HOST_DIR) or DEFAULT_LIMITED_HOST_DIR

    cert = _pick(cert_file, env, ENV_CLIENT_CERT_FILE)
    key = _pick(key_file, env, ENV_CLIENT_KEY_FILE)
    cert = None if cert is None else os.fspath(cert)
    key = None if key is None else os.fspath(key)
    try:
        for tg in targets:
            tg.check_client_cert(cert, key)
    except ValueError as e:
        raise ValueError(
            f"{e} (cert_file: argument or {ENV_CLIENT_CERT_FILE}; "
            f"key_file: argument or {ENV_CLIENT_KEY_FILE})"
        ) from None
    for what, path in (("client certificate", cert), ("client key", key)):
        if path is None:
            continue
        try:
            empty = not Path(path).read_bytes().strip()
        except OSError as e:
            raise ValueError(f"privledger: cannot read the {what} file: {e}") from e
        if empty:
            raise ValueError(f"privledger: the {what} file {path} is empty")

    ca = _pick(ca_file, env, ENV_CA_FILE)
    return HookSettings(
        target=target,
        token=provider,
        on_unavailable=mode,
        timeout=seconds,
        guard=SocketGuard.build(sockets, limited),
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        channels=ChannelCache(target, ca, cert, key),
        fallbacks=tuple((tg, ChannelCache(tg, ca, cert, key)) for tg in targets[1:]),
    )


#: Failures after which another node of a cluster is asked (with the same request
#: id: a node that recorded the decision answers the first result again).
_TRY_ANOTHER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def _ask_nodes(settings: HookSettings, token: str, **request: Any) -> Any:
    """AuthorizeSpawn on the first node that answers; the last failure if none does."""
    last: BaseException | None = None
    for target, channels in settings.nodes():
        try:
            return await asyncio.wait_for(
                authorize_spawn(
                    target,
                    token,
                    timeout=settings.timeout,
                    ca_file=settings.ca_file,
                    cert_file=settings.cert_file,
                    key_file=settings.key_file,
                    channels=channels,
                    **request,
                ),
                # grpc enforces the deadline; this only guards against a wedged channel.
                timeout=settings.timeout + 5,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() not in _TRY_ANOTHER:
                raise
            last = err
        except asyncio.TimeoutError as err:
            last = err
    assert last is not None
    raise last


def _describe_failure(settings: HookSettings, err: BaseException) -> str:
    where = ", ".join(tg.display for tg, _ in settings.nodes())
    if len(settings.fallbacks) > 0:
        where = f"every node ({where})"
    if isinstance(err, grpc.aio.AioRpcError):
        code = err.code()
        name = code.name if code is not None else "UNKNOWN"
        details = err.details() or ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return f"the privledger server at {where} rejected the spawner token ({name}: {details})"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return (
                f"the privledger server at {where} did not answer within "
                f"{settings.timeout:g} s ({name})"
            )
        return f"cannot get a decision from the privledger server at {where} ({name}: {details})"
    if isinstance(err, asyncio.TimeoutError):
        return f"the privledger server at {where} did not answer within {settings.timeout:g} s"
    return f"cannot get a decision from the privledger server at {where} ({type(err).__name__}: {err})"


async def obtain_decision(settings: HookSettings, spawner: Any) -> Any:
    """AuthorizeSpawn for the spawner's user, server and image: the Decision, or
    None when none could be obtained and the hook is set to deny. Raises
    :class:`PrivledgerUnavailable` when it is set to refuse. Changes nothing."""
    user = spawner.user.name
    server_name = getattr(spawner, "name", "") or ""
    image = getattr(spawner, "image", "") or ""
    if not isinstance(image, str):
        image = str(image)
    log = spawner.log
    try:
        token = settings.token()
        return await _ask_nodes(
            settings,
            token,
            user=user,
            server_name=server_name,
            image=image,
            request_id=new_request_id(),
        )
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001 - fail closed on anything
        why = _describe_failure(settings, err)
        if settings.on_unavailable == "refuse":
            msg = (
                f"privledger: refusing to start the server of user {user!r}"
                f"{f' ({server_name!r})' if server_name else ''}: {why}. "
                "Docker privileges cannot be decided, so the spawn is refused "
                "(on_unavailable=refuse)."
            )
            log.error(msg)
            raise PrivledgerUnavailable(msg) from err
        log.error(
            "privledger: %s; starting the server of user %r%s WITHOUT Docker "
            "privileges (on_unavailable=deny)",
            why,
            user,
            f" ({server_name!r})" if server_name else "",
        )
        return None


def log_decision(spawner: Any, decision: Any, frags: Fragments) -> None:
    """The decision in the Hub's log: its id, seq, outcome and what it gives."""
    spawner.log.info(
        "privledger: decision %s (seq %d) for user %r server %r image %r: %s: %s%s",
        decision.decision_id,
        decision.seq,
        spawner.user.name,
        getattr(spawner, "name", "") or "",
        getattr(spawner, "image", "") or "",
        "allowed" if decision.allowed else "no privileges",
        decision.reason,
        "".join(f"; bind {b.host}:{b.container}:{b.mode}" for b in frags.binds)
        + ("; privileged" if frags.privileged else ""),
    )


async def run_hook(settings: HookSettings, spawner: Any) -> Any:
    """One spawn: returns the Decision, or None when none could be obtained."""
    try:
        decision = await obtain_decision(settings, spawner)
    except PrivledgerUnavailable:
        # Fail closed either way: no socket, no privileged flag, no stale labels.
        apply_fragments(spawner, Fragments.nothing(), settings.guard)
        set_decision(spawner, None)
        raise
    if decision is None:
        apply_fragments(spawner, Fragments.nothing(), settings.guard)
        set_decision(spawner, None)
        return None
    frags = Fragments.from_decision(decision)
    apply_fragments(spawner, frags, settings.guard)
    set_decision(spawner, decision)
    log_decision(spawner, decision, frags)
    return decision


def set_decision(spawner: Any, decision: Any) -> None:
    try:
        spawner.privledger_decision = decision
    except AttributeError:  # pragma: no cover - a spawner with __slots__
        pass


def make_pre_spawn_hook(
    server: str | Iterable[str] | None = None,
    token: str | None = None,
    *,
    token_file: str | os.PathLike | None = None,
    on_unavailable: str | None = None,
    timeout: float | str | None = None,
    host_socket: str | Iterable[str] | None = None,
    limited_host_dir: str | None = None,
    ca_file: str | None = None,
    cert_file: str | os.PathLike | None = None,
    key_file: str | os.PathLike | None = None,
    before: Callable[[Any], Any] | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """Builds an async ``pre_spawn_hook`` for DockerSpawner.

    The hook calls privledger's ``AuthorizeSpawn`` with the user name, the named
    server's name and the image, then applies the decision to the spawner (see
    :mod:`privledger_jupyterhub.fragments`) and logs the decision id.

    server: the privledger server's address; for a cluster, several nodes' addresses
    (a list, or separated by commas): when one is unreachable the next is asked, with
    the same request id, so a decision recorded by a node that then failed is
    answered again rather than made twice.

    on_unavailable: what to do when no decision can be obtained (server down,
    timeout, token rejected): ``"deny"`` (default) starts the server without any
    Docker privilege; ``"refuse"`` raises :class:`PrivledgerUnavailable`, which
    fails the spawn with that message.

    cert_file, key_file: a client certificate and its key (PEM), for a server that
    requires mutual TLS; both or neither, ``https://`` only.

    before: an existing ``pre_spawn_hook`` (plain or async) to keep. It runs first;
    privledger's decision is applied after it, so nothing it sets can give a Docker
    socket or ``--privileged`` that privledger did not (socket binds it adds for a
    user without the grant are removed, with a warning). An exception it raises fails
    the spawn before privledger is asked.
    """
    settings = resolve_settings(
        server,
        token,
        token_file=token_file,
        on_unavailable=on_unavailable,
        timeout=timeout,
        host_socket=host_socket,
        limited_host_dir=limited_host_dir,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
    )

    async def privledger_pre_spawn_hook(spawner: Any) -> None:
        if before is not None:
            result = before(spawner)
            if inspect.isawaitable(result):
                await result
        await run_hook(settings, spawner)

    privledger_pre_spawn_hook.settings = settings  # type: ignore[attr-defined]
    return privledger_pre_spawn_hook
