"""The KubeSpawner ``modify_pod_hook``: ask privledger, apply the answer to the pod.

    from privledger_jupyterhub import make_modify_pod_hook
    c.KubeSpawner.modify_pod_hook = make_modify_pod_hook(
        token_file="/srv/jupyterhub/privledger.token")

It takes the settings of :func:`privledger_jupyterhub.make_pre_spawn_hook` (the
same arguments and environment variables). On Kubernetes the Docker daemon a user may
reach is a node's own (BinderHub's per-node daemon, its socket on a ``hostPath``), and
the user's limited socket is served on that node by the privledger agent, in
``limited_host_dir``. What the hook does to the ``V1Pod`` KubeSpawner built:

* every ``hostPath`` volume that exposes a Docker socket (the socket itself, a
  directory holding it such as ``/run`` or ``/var/run``, or the limited-socket
  directory) is removed with the mounts that use it, with a warning, whoever put it
  there (``KubeSpawner.volumes``, an earlier hook);
* the decision's binds become ``hostPath`` volumes mounted in the notebook container
  (the pod's first): the node's daemon socket (type ``Socket``) for a raw grant, the
  user's socket directory (type ``Directory``: the pod does not start on a node
  whose agent has not made it) for a limited one, read-only when the grant says so;
* ``securityContext.privileged`` of the notebook container is the decision's, and no
  other container of the pod is privileged (init containers are the operator's, run
  before the user's code, and are left alone); a privileged container may not set
  ``allowPrivilegeEscalation: false``, so that is lifted with it;
* the decision's environment (``DOCKER_HOST``) is set on the notebook container;
* the decision's labels go into the pod's annotations, and into its labels when
  their values are valid label values; stale ``privledger.*`` keys are removed.

A pod is built afresh for every spawn, so, unlike DockerSpawner's, nothing from an
earlier spawn needs undoing.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

from .fragments import LABEL_PREFIX, Fragments, SocketGuard, normalize
from .hook import (
    PrivledgerUnavailable,
    log_decision,
    obtain_decision,
    resolve_settings,
    set_decision,
)

__all__ = ["apply_to_pod", "make_modify_pod_hook"]

#: A Kubernetes label value: at most 63 characters, alphanumeric at both ends.
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
#: The volumes this hook adds are named so.
VOLUME_PREFIX = "privledger-"


def _models() -> Any:
    try:
        from kubernetes_asyncio.client import models  # type: ignore[import-not-found]
    except ImportError as e:  # pragma: no cover - without KubeSpawner installed
        raise ImportError(
            "privledger: make_modify_pod_hook needs KubeSpawner (and its "
            "kubernetes_asyncio client): pip install jupyterhub-kubespawner"
        ) from e
    return models


def _get(obj: Any, attr: str, key: str) -> Any:
    """A field of a Kubernetes model, or of the dict KubeSpawner left in its place
    (``security_context`` of a container, say, is often a plain dict)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key, obj.get(attr))
    return getattr(obj, attr, None)


def _set(obj: Any, attr: str, key: str, value: Any) -> None:
    if isinstance(obj, dict):
        obj.pop(attr, None)
        obj[key] = value
    else:
        setattr(obj, attr, value)


def _warn(log: Any, msg: str, *args: Any) -> None:
    if log is not None:
        log.warning(msg, *args)


def apply_to_pod(
    pod: Any, frags: Fragments, guard: SocketGuard, log: Any = None, user: str = ""
) -> list[str]:
    """Apply ``frags`` to the ``V1Pod`` in place; the host paths of the socket
    volumes removed."""
    m = _models()
    spec = pod.spec
    containers = list(spec.containers or [])
    if not containers:
        raise ValueError("privledger: the pod has no container to apply the decision to")
    notebook = containers[0]

    # Socket volumes: removed with every mount of them.
    removed: list[str] = []
    bad: set[str] = set()
    for v in spec.volumes or []:
        path = _get(_get(v, "host_path", "hostPath"), "path", "path")
        if path is not None and guard.exposes(path):
            name = _get(v, "name", "name")
            bad.add(name)
            removed.append(path)
            _warn(
                log,
                "privledger: removed hostPath volume %s (%s) for user %s: Docker socket "
                "access not granted",
                name,
                path,
                user,
            )
    spec.volumes = [v for v in (spec.volumes or []) if _get(v, "name", "name") not in bad]
    for c in [*containers, *(spec.init_containers or [])]:
        vms = _get(c, "volume_mounts", "volumeMounts")
        if vms:
            _set(c, "volume_mounts", "volumeMounts",
                 [vm for vm in vms if _get(vm, "name", "name") not in bad])

    # Privileged: the decision's, on the notebook container only.
    for c in containers:
        sc = _get(c, "security_context", "securityContext")
        granted = c is notebook and frags.privileged
        if _get(sc, "privileged", "privileged") and not granted:
            _warn(log, "privledger: container %s of user %s made unprivileged: "
                  "--privileged not granted", _get(c, "name", "name"), user)
            _set(sc, "privileged", "privileged", False)
    if frags.privileged:
        sc = _get(notebook, "security_context", "securityContext")
        if sc is None:
            sc = m.V1SecurityContext()
            _set(notebook, "security_context", "securityContext", sc)
        _set(sc, "privileged", "privileged", True)
        if _get(sc, "allow_privilege_escalation", "allowPrivilegeEscalation") is False:
            _set(sc, "allow_privilege_escalation", "allowPrivilegeEscalation", None)

    # The granted binds.
    sockets = guard.sockets
    for i, b in enumerate(frags.binds):
        name = f"{VOLUME_PREFIX}{i}"
        kind = "Socket" if normalize(b.host) in sockets else "Directory"
        spec.volumes.append(
            m.V1Volume(name=name, host_path=m.V1HostPathVolumeSource(path=b.host, type=kind))
        )
        mounts = list(_get(notebook, "volume_mounts", "volumeMounts") or [])
        mounts.append(
            m.V1VolumeMount(name=name, mount_path=b.container, read_only=b.mode == "ro")
        )
        _set(notebook, "volume_mounts", "volumeMounts", mounts)

    # The environment.
    if frags.env:
        env = [e for e in (_get(notebook, "env", "env") or [])
               if _get(e, "name", "name") not in frags.env]
        env.extend(m.V1EnvVar(name=k, value=v) for k, v in sorted(frags.env.items()))
        _set(notebook, "env", "env", env)

    # Labels and annotations.
    meta = pod.metadata
    annotations = {
        k: v for k, v in (meta.annotations or {}).items() if not k.startswith(LABEL_PREFIX)
    }
    labels = {k: v for k, v in (meta.labels or {}).items() if not k.startswith(LABEL_PREFIX)}
    annotations.update(frags.labels)
    labels.update({k: v for k, v in frags.labels.items() if _LABEL_VALUE.match(v) and len(v) <= 63})
    meta.annotations = annotations
    meta.labels = labels
    return removed


def make_modify_pod_hook(
    *args: Any,
    before: Callable[[Any, Any], Any] | None = None,
    **settings_kwargs: Any,
) -> Callable[[Any, Any], Any]:
    """Builds an async ``modify_pod_hook`` for KubeSpawner.

    The settings are exactly :func:`make_pre_spawn_hook`'s (``server``, ``token``,
    ``token_file``, ``on_unavailable``, ``timeout``, ``host_socket``,
    ``limited_host_dir``, ``ca_file``, ``cert_file``, ``key_file``), read by the same
    :func:`resolve_settings`. ``host_socket`` is the path of the node's Docker socket
    as privledger grants it (BinderHub's per-node daemon: its socket's ``hostPath``);
    ``limited_host_dir`` the agent's directory of per-user sockets on each node.

    before: an existing ``modify_pod_hook`` (plain or async, ``(spawner, pod)``) to
    keep. It runs first; the decision is applied to the pod it returns, so nothing it
    adds can give a socket or ``privileged`` that privledger did not.
    """
    _models()
    settings = resolve_settings(*args, **settings_kwargs)

    async def privledger_modify_pod_hook(spawner: Any, pod: Any) -> Any:
        if before is not None:
            result = before(spawner, pod)
            if inspect.isawaitable(result):
                result = await result
            pod = result if result is not None else pod
        user = spawner.user.name
        try:
            decision = await obtain_decision(settings, spawner)
        except PrivledgerUnavailable:
            apply_to_pod(pod, Fragments.nothing(), settings.guard, spawner.log, user)
            set_decision(spawner, None)
            raise
        if decision is None:
            apply_to_pod(pod, Fragments.nothing(), settings.guard, spawner.log, user)
            set_decision(spawner, None)
            return pod
        frags = Fragments.from_decision(decision)
        apply_to_pod(pod, frags, settings.guard, spawner.log, user)
        set_decision(spawner, decision)
        log_decision(spawner, decision, frags)
        return pod

    privledger_modify_pod_hook.settings = settings  # type: ignore[attr-defined]
    return privledger_modify_pod_hook
