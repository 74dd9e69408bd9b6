"""Apply a privledger decision to a DockerSpawner, without talking to anything.

Everything here is pure bookkeeping on a *spawner-like* object: anything with
``user.name``, ``name``, ``image``, ``volumes`` (dict), ``extra_host_config``
(dict, or a callable as DockerSpawner >= 13 allows), ``extra_create_kwargs``
(likewise), ``environment`` (dict) and ``log``. ``read_only_volumes``, ``mounts``
and ``volume_binds`` are used when present (a real DockerSpawner has them).

The rules:

* Every bind that exposes a Docker socket is removed wherever an admin or an
  earlier spawn put it: ``volumes``, ``read_only_volumes``, ``mounts``,
  ``extra_host_config["binds"]`` and ``extra_host_config["mounts"]``; the binds the
  decision grants are then added to ``extra_host_config["binds"]``, in the granted
  mode. So a socket is bound exactly when, and as, privledger granted it.
  A bind "exposes the socket" when its host path is the socket (any configured
  path and the well-known aliases), a directory that contains it (``/run``,
  ``/var/run``, ``/``), or the per-user limited-socket directory or anything in
  it.
* ``extra_host_config["binds"]`` becomes a dict in docker-py form
  ``{host: {"bind": container, "mode": mode}}`` holding the spawner's own volume
  binds, the admin's extra binds and the granted binds. DockerSpawner deep-merges
  a dict into its volume binds; a *list* would replace them, silently dropping the
  user's volumes.
* ``extra_host_config["privileged"]`` is set explicitly, ``True`` or ``False``.
* The decision labels (``privledger.decision``, ``privledger.user``) are merged
  into ``extra_create_kwargs["labels"]``; stale ``privledger.*`` labels from an
  earlier spawn are removed first.
* The decision's env (``DOCKER_HOST`` for a limited socket) is merged into
  ``environment``; keys set by an earlier decision and not granted now are
  removed.

A spawner object lives as long as its server entry in JupyterHub and is reused for
every start, so all of this must hold when the previous spawn had more privileges
than this one (revocation).
"""

from __future__ import annotations

import copy
import inspect
import posixpath
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

#: Where the Docker daemon socket usually lives on a host.
WELL_KNOWN_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
#: privledger's default host directory of per-user limited sockets.
DEFAULT_LIMITED_HOST_DIR = "/run/privledger/users"
#: Label keys privledger owns.
LABEL_PREFIX = "privledger."
#: Attribute on the spawner remembering which env keys the last decision set.
_ENV_MEMO = "_privledger_env_keys"
#: Marker on our wrappers of callable config, pointing at the admin's callable.
_ORIGINAL = "__privledger_original__"


def normalize(path: str) -> str:
    """A host path with `.`/`..`, repeated and trailing slashes removed."""
    p = posixpath.normpath(path)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p


def _aliases(path: str) -> set[str]:
    """``/var/run`` is a symlink to ``/run`` on every current distribution."""
    p = normalize(path)
    out = {p}
    for a, b in (("/var/run", "/run"), ("/run", "/var/run")):
        if p == a or p.startswith(a + "/"):
            out.add(b + p[len(a):])
    return out


def _is_ancestor(a: str, b: str) -> bool:
    """True when directory ``a`` strictly contains path ``b``."""
    return a != b and (a == "/" or b.startswith(a + "/"))


@dataclass(frozen=True)
class SocketGuard:
    """Knows which host paths expose a Docker socket."""

    sockets: frozenset[str]
    limited_dirs: frozenset[str]

    @classmethod
    def build(
        cls,
        host_sockets: Iterable[str] = (),
        limited_host_dir: str | None = DEFAULT_LIMITED_HOST_DIR,
    ) -> "SocketGuard":
        sockets: set[str] = set()
        for s in (*WELL_KNOWN_SOCKETS, *host_sockets):
            if s:
                sockets |= _aliases(s)
        dirs: set[str] = set()
        if limited_host_dir:
            dirs |= _aliases(limited_host_dir)
        return cls(frozenset(sockets), frozenset(dirs))

    def exposes(self, host_path: Any) -> bool:
        """True when binding ``host_path`` would put a Docker socket in reach."""
        if not isinstance(host_path, str) or not host_path.startswith("/"):
            return False  # a named volume, not a host path
        h = normalize(host_path)
        for s in self.sockets:
            if h == s or _is_ancestor(h, s):
                return True
        for d in self.limited_dirs:
            if h == d or _is_ancestor(h, d) or _is_ancestor(d, h):
                return True
        return False


@dataclass(frozen=True)
class Bind:
    host: str
    container: str
    mode: str = "rw"

    @classmethod
    def parse(cls, spec: str) -> "Bind":
        """``host:container[:mode]``, as Docker and privledger write binds."""
        parts = spec.split(":")
        if len(parts) >= 3:
            return cls(":".join(parts[:-2]), parts[-2], parts[-1] or "rw")
        if len(parts) == 2:
            return cls(parts[0], parts[1], "rw")
        return cls(spec, spec, "rw")

    def docker_py(self) -> dict[str, str]:
        return {"bind": self.container, "mode": self.mode}


@dataclass
class Fragments:
    """What the spawner must apply: a decision's fragments, or none at all."""

    binds: list[Bind] = field(default_factory=list)
    privileged: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_decision(cls, decision: Any) -> "Fragments":
        f = decision.fragments
        return cls(
            binds=[Bind.parse(b) for b in f.binds],
            privileged=bool(f.privileged),
            labels=dict(f.labels),
            env=dict(f.env),
        )

    @classmethod
    def nothing(cls) -> "Fragments":
        """No privileges: what a spawn gets when no decision could be obtained."""
        return cls()


def _binds_to_dict(binds: Any, default_mode: str = "rw") -> dict[str, Any]:
    """docker-py ``binds`` (a list of strings or a dict) as a dict."""
    if not binds:
        return {}
    if isinstance(binds, Mapping):
        out: dict[str, Any] = {}
        for host, spec in binds.items():
            if isinstance(spec, Mapping):
                out[host] = dict(spec)
            else:  # {host: container}
                out[host] = {"bind": spec, "mode": default_mode}
        return out
    out = {}
    for spec in binds:
        b = Bind.parse(spec)
        out[b.host] = b.docker_py()
    return out


def _mount_source(m: Any) -> Any:
    if isinstance(m, Mapping):
        typ = m.get("type", m.get("Type", "bind"))
        if typ != "bind":
            return None
        return m.get("source", m.get("Source"))
    return None


class _Applier:
    def __init__(self, spawner: Any, frags: Fragments, guard: SocketGuard):
        self.spawner = spawner
        self.frags = frags
        self.guard = guard
        self.granted_hosts = {normalize(b.host) for b in frags.binds}
        self.removed: list[str] = []

    def forbidden(self, host: Any) -> bool:
        """Every bind that exposes a socket is removed; the granted binds are then
        added back in ``extra_host_config["binds"]``, in the granted mode."""
        return self.guard.exposes(host)

    def _note(self, where: str, host: str, target: Any) -> None:
        log = getattr(self.spawner, "log", None)
        if isinstance(host, str) and normalize(host) in self.granted_hosts:
            # Granted: replaced by the decision's own bind (e.g. left over from the
            # previous spawn of this spawner), nothing to warn about.
            if log is not None:
                log.debug("privledger: %s bind %s -> %s replaced by the granted bind",
                          where, host, target)
            return
        self.removed.append(host)
        if log is not None:
            log.warning(
                "privledger: removed %s bind %s -> %s for user %s: Docker socket "
                "access not granted",
                where,
                host,
                target,
                _user_name(self.spawner),
            )

    # -- volumes --------------------------------------------------------------

    def strip_volume_dict(self, attr: str) -> None:
        vols = getattr(self.spawner, attr, None)
        if not isinstance(vols, Mapping):
            return
        kept = {}
        for host, target in vols.items():
            if self.forbidden(host):
                self._note(f"{attr}", host, target)
            else:
                kept[host] = target
        if len(kept) != len(vols):
            setattr(self.spawner, attr, kept)

    def strip_mounts_list(self, mounts: Any, where: str) -> Any:
        if not isinstance(mounts, (list, tuple)):
            return mounts
        kept = []
        for m in mounts:
            src = _mount_source(m)
            if src is not None and self.forbidden(src):
                target = m.get("target", m.get("Target")) if isinstance(m, Mapping) else None
                self._note(where, src, target)
            else:
                kept.append(m)
        return type(mounts)(kept) if len(kept) != len(mounts) else mounts

    def own_volume_binds(self) -> dict[str, Any]:
        """The spawner's own volumes as docker-py binds (after stripping)."""
        vb = getattr(type(self.spawner), "volume_binds", None)
        if vb is not None:  # a real DockerSpawner: templates rendered, ro volumes in
            try:
                return copy.deepcopy(dict(self.spawner.volume_binds))
            except Exception:  # pragma: no cover - fall back to our own reading
                pass
        out = _binds_to_dict(getattr(self.spawner, "volumes", None) or {}, "rw")
        ro = getattr(self.spawner, "read_only_volumes", None) or {}
        out.update(_binds_to_dict(ro, "ro"))
        return out

    # -- extra_host_config / extra_create_kwargs -----------------------------

    def host_config(self, own_binds: dict[str, Any]) -> Callable[[dict], dict]:
        def edit(cfg: dict) -> dict:
            binds: dict[str, Any] = {}
            for host, spec in own_binds.items():
                if self.forbidden(host):  # e.g. a templated volume path
                    self._note("volume", host, spec.get("bind"))
                else:
                    binds[host] = spec
            for host, spec in _binds_to_dict(cfg.get("binds")).items():
                if self.forbidden(host):
                    self._note("extra_host_config", host, spec.get("bind"))
                else:
                    binds[host] = spec
            for b in self.frags.binds:
                binds[b.host] = b.docker_py()
            cfg["binds"] = binds
            if "mounts" in cfg:
                cfg["mounts"] = self.strip_mounts_list(cfg["mounts"], "extra_host_config mount")
            cfg["privileged"] = self.frags.privileged
            return cfg

        return edit

    def create_kwargs(self) -> Callable[[dict], dict]:
        def edit(cfg: dict) -> dict:
            labels = cfg.get("labels") or {}
            if not isinstance(labels, Mapping):  # docker allows a list of names
                labels = {str(k): "" for k in labels}
            labels = {
                k: v for k, v in labels.items() if not str(k).startswith(LABEL_PREFIX)
            }
            labels.update(self.frags.labels)
            cfg["labels"] = labels
            return cfg

        return edit

    def edit_config(self, attr: str, edit: Callable[[dict], dict]) -> None:
        current = getattr(self.spawner, attr, None)
        if callable(current):
            original = getattr(current, _ORIGINAL, current)

            async def wrapped(spawner: Any) -> dict:
                value = original(spawner)
                if inspect.isawaitable(value):
                    value = await value
                return edit(copy.deepcopy(dict(value or {})))

            setattr(wrapped, _ORIGINAL, original)
            setattr(self.spawner, attr, wrapped)
        else:
            setattr(self.spawner, attr, edit(copy.deepcopy(dict(current or {}))))

    # -- environment ----------------------------------------------------------

    def environment(self) -> None:
        env = dict(getattr(self.spawner, "environment", None) or {})
        previous = getattr(self.spawner, _ENV_MEMO, None) or ()
        for k in previous:
            if k not in self.frags.env:
                env.pop(k, None)
        env.update(self.frags.env)
        self.spawner.environment = env
        try:
            setattr(self.spawner, _ENV_MEMO, tuple(sorted(self.frags.env)))
        except AttributeError:  # pragma: no cover - a spawner with __slots__
            pass

    def run(self) -> list[str]:
        self.strip_volume_dict("volumes")
        self.strip_volume_dict("read_only_volumes")
        if hasattr(self.spawner, "mounts"):
            mounts = self.strip_mounts_list(getattr(self.spawner, "mounts"), "mounts")
            if mounts is not getattr(self.spawner, "mounts"):
                self.spawner.mounts = mounts
        own = self.own_volume_binds()
        self.edit_config("extra_host_config", self.host_config(own))
        self.edit_config("extra_create_kwargs", self.create_kwargs())
        self.environment()
        return self.removed


def _user_name(spawner: Any) -> str:
    user = getattr(spawner, "user", None)
    return getattr(user, "name", "") or ""


def apply_fragments(spawner: Any, frags: Fragments, guard: SocketGuard) -> list[str]:
    """Apply ``frags`` to ``spawner`` in place.

    Returns the host paths of the socket binds removed right away (binds inside a
    callable ``extra_host_config`` are removed, and logged, when DockerSpawner calls
    it).
    """
    return _Applier(spawner, frags, guard).run()
