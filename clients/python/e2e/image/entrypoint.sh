#!/bin/sh
# Serves what JupyterHub polls to see the server is up (${JUPYTERHUB_SERVICE_PREFIX}api/)
# and a report of the Docker privileges the container actually got, on port 8888.
prefix="${JUPYTERHUB_SERVICE_PREFIX:-/}"
api="/www${prefix}api"
mkdir -p "$api"
echo '{"version": "5.0.0"}' > "$api/index.html"
{
    if [ -S /var/run/docker.sock ]; then echo "raw_socket=yes"; else echo "raw_socket=no"; fi
    if [ -S /run/privledger/docker.sock ]; then echo "limited_socket=yes"; else echo "limited_socket=no"; fi
    echo "docker_host=${DOCKER_HOST:-}"
    # A privileged container sees the host's devices.
    if [ -e /dev/mem ] || [ -e /dev/kmsg ]; then echo "privileged=yes"; else echo "privileged=no"; fi
    echo "user=${JUPYTERHUB_USER:-}"
} > "$api/privledger.txt"

httpd -f -p 8888 -h /www &
pid=$!
# docker stop sends TERM: stop at once instead of waiting for the KILL.
trap 'kill "$pid" 2>/dev/null; wait "$pid"; exit 0' TERM INT
wait "$pid"
