"""privledger for JupyterHub: a DockerSpawner ``pre_spawn_hook`` (and a KubeSpawner
``modify_pod_hook``) that asks the privledger ledger which Docker privileges a user's
container gets, applies exactly those, and records why.

    from privledger_jupyterhub import make_pre_spawn_hook
    c.DockerSpawner.pre_spawn_hook = make_pre_spawn_hook(
        token_file="/srv/jupyterhub/privledger.token")

    from privledger_jupyterhub import make_modify_pod_hook
    c.KubeSpawner.modify_pod_hook = make_modify_pod_hook(
        token_file="/srv/jupyterhub/privledger.token")

See docs/jupyterhub.md in the privledger repository.
"""

from .client import DEFAULT_SERVER, Target, authorize_spawn
from .fragments import Bind, Fragments, SocketGuard, apply_fragments
from .hook import (
    HookSettings,
    PrivledgerUnavailable,
    make_pre_spawn_hook,
    resolve_settings,
    run_hook,
)
from .kube import apply_to_pod, make_modify_pod_hook

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SERVER",
    "Bind",
    "Fragments",
    "HookSettings",
    "PrivledgerUnavailable",
    "SocketGuard",
    "Target",
    "apply_fragments",
    "apply_to_pod",
    "authorize_spawn",
    "make_modify_pod_hook",
    "make_pre_spawn_hook",
    "resolve_settings",
    "run_hook",
    "__version__",
]
