# jupyterhub_config.py: JupyterHub with DockerSpawner, where privledger decides
# which Docker privileges each user's container gets and records why.
#
# Before starting the Hub:
#
#   pip install jupyterhub dockerspawner ./clients/python   # privledger-jupyterhub
#   npm install -g configurable-http-proxy
#
#   # On the privledger host (see docs/jupyterhub.md):
#   privledger serve --data /var/lib/privledger --listen 127.0.0.1:50051 &
#   privledger token create jupyterhub --role spawner --json \
#       | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])' \
#       > /srv/jupyterhub/privledger.token
#   chmod 600 /srv/jupyterhub/privledger.token     # owned by the user running the Hub
#
#   # Who gets what:
#   privledger group add-member docker-privileged alice         # raw socket, rw
#   privledger grant issue --user bob --socket limited --reason "image builds"
#
# Every setting below that reads os.environ has a sensible default; override
# through the environment rather than editing the file.

import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

# ---------------------------------------------------------------------------
# The Hub
# ---------------------------------------------------------------------------

# Listen address of the public proxy.
c.JupyterHub.bind_url = os.environ.get("JUPYTERHUB_BIND_URL", "http://0.0.0.0:8000")

# Containers must reach the Hub's API. With the Hub on the Docker host and the
# containers on the default bridge network, listen on all interfaces and tell the
# containers the bridge address of the host.
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = os.environ.get("JUPYTERHUB_CONNECT_IP", "172.17.0.1")

# Authentication: PAM (system accounts) by default. privledger compares user names
# exactly as JupyterHub hands them over (after the authenticator's normalization,
# usually lower case), so grant to those names.
c.JupyterHub.authenticator_class = os.environ.get("JUPYTERHUB_AUTHENTICATOR", "pam")
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allow_all = True

# ---------------------------------------------------------------------------
# DockerSpawner
# ---------------------------------------------------------------------------

c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = os.environ.get(
    "DOCKER_NOTEBOOK_IMAGE", "quay.io/jupyter/base-notebook:latest"
)
c.DockerSpawner.network_name = os.environ.get("DOCKER_NETWORK_NAME", "bridge")
c.DockerSpawner.remove = True  # containers are removed when servers stop
c.DockerSpawner.notebook_dir = "/home/jovyan/work"
c.DockerSpawner.allow_named_servers = True  # each named server gets its own decision

# The users' own storage. Do NOT add /var/run/docker.sock (or /run, /var/run)
# here: the privledger hook removes any socket bind that was not granted, from
# volumes, mounts and extra_host_config alike, and logs a warning for each.
c.DockerSpawner.volumes = {"jupyterhub-user-{username}": "/home/jovyan/work"}

# Anything else in extra_host_config / extra_create_kwargs is kept; the hook merges
# its binds, privileged flag and labels into them.
c.DockerSpawner.extra_host_config = {"mem_limit": "4g"}

# ---------------------------------------------------------------------------
# privledger: the three lines
# ---------------------------------------------------------------------------
#
# The hook asks privledger's AuthorizeSpawn for every start, then applies the
# decision: the socket bind for a raw grant (rw or ro), the per-user proxy socket
# and DOCKER_HOST for a limited grant, --privileged for a privileged grant, and the
# labels privledger.decision / privledger.user on the container.
#
# on_unavailable: what happens when privledger cannot be reached (or rejects the
# token): "deny" starts the server WITHOUT any Docker privilege; "refuse" fails
# the spawn with a clear message. Either way, nothing privileged is started
# without a recorded decision.
#
# Every argument can also come from the environment: PRIVLEDGER_SERVER,
# PRIVLEDGER_TOKEN_FILE (or PRIVLEDGER_TOKEN), PRIVLEDGER_ON_UNAVAILABLE,
# PRIVLEDGER_TIMEOUT; with all of them set, make_pre_spawn_hook() needs no
# arguments.

from privledger_jupyterhub import make_pre_spawn_hook  # noqa: E402

c.DockerSpawner.pre_spawn_hook = make_pre_spawn_hook(
    server=os.environ.get("PRIVLEDGER_SERVER", "http://127.0.0.1:50051"),
    token_file=os.environ.get("PRIVLEDGER_TOKEN_FILE", "/srv/jupyterhub/privledger.token"),
    on_unavailable=os.environ.get("PRIVLEDGER_ON_UNAVAILABLE", "deny"),
    timeout=float(os.environ.get("PRIVLEDGER_TIMEOUT", "5")),
)

# --- Optional: keep managing docker-privileged in the admin panel -----------------
# The group sync runs as a managed service: privledger groups marked synced follow
# the hub's groups of the same name (docs/jupyterhub.md, "group sync"). Once:
#
#   privledger token create hub-sync --role sync --json \
#       | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])' \
#       > /srv/jupyterhub/privledger-sync.token
#   privledger group sync docker-privileged on --reason "managed in the hub's admin panel"
#
# then uncomment:
#
# import sys
# c.JupyterHub.services = [{
#     "name": "privledger-sync",
#     "command": [sys.executable, "-m", "privledger_jupyterhub.sync"],
#     "environment": {
#         "PRIVLEDGER_SERVER": os.environ.get("PRIVLEDGER_SERVER", "http://127.0.0.1:50051"),
#         "PRIVLEDGER_TOKEN_FILE": "/srv/jupyterhub/privledger-sync.token",
#     },
# }]
# c.JupyterHub.load_roles = [{
#     "name": "privledger-sync",
#     "scopes": ["read:groups"],
#     "services": ["privledger-sync"],
# }]
