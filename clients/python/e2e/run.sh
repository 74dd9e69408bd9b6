#!/usr/bin/env bash
# End-to-end test: JupyterHub + DockerSpawner + the privledger hook + Docker.
#
# Installs pinned jupyterhub, dockerspawner and pytest into a virtualenv,
# configurable-http-proxy with npm into a local folder, builds the FROM-scratch
# busybox user image, and runs test_e2e.py. Needs a Docker daemon (started here in
# the background when /var/run/docker.sock is absent and dockerd is installed),
# node/npm, and a static busybox (apt-get install busybox-static).
#
#   PRIVLEDGER_BIN             the privledger binary (default: <repo>/target/debug/privledger)
#   PRIVLEDGER_E2E=1           also check the Docker watcher's audit entries
#   PRIVLEDGER_E2E_SERVE_ARGS  extra `privledger serve` arguments
#   PRIVLEDGER_E2E_WORK        scratch directory (default: clients/python/e2e/.work)
#   BUSYBOX                    static busybox binary (default: the one on PATH)
#
# Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
client="$(cd "$here/.." && pwd)"
repo="$(cd "$client/../.." && pwd)"
work="${PRIVLEDGER_E2E_WORK:-$here/.work}"
venv="$work/venv"
python="${PYTHON:-python3}"

JUPYTERHUB_VERSION=5.5.4
DOCKERSPAWNER_VERSION=14.0.0
CHP_VERSION=5.3.0
PYTEST_VERSION=9.2.0
IMAGE=privledger-e2e-user:latest

log() { printf 'e2e: %s\n' "$*" >&2; }
mkdir -p "$work"

export PRIVLEDGER_BIN="${PRIVLEDGER_BIN:-$repo/target/debug/privledger}"
case "$PRIVLEDGER_BIN" in /*) ;; *) PRIVLEDGER_BIN="$repo/$PRIVLEDGER_BIN" ;; esac
[ -x "$PRIVLEDGER_BIN" ] || { log "privledger binary not found: $PRIVLEDGER_BIN"; exit 1; }

# --- Docker ------------------------------------------------------------------
started_dockerd=""
cleanup() {
    if [ -n "$started_dockerd" ]; then
        log "stopping the dockerd started here (pid $started_dockerd)"
        kill "$started_dockerd" 2>/dev/null || true
        wait "$started_dockerd" 2>/dev/null || true
    fi
}
trap cleanup EXIT
if ! docker info >/dev/null 2>&1; then
    if [ ! -S /var/run/docker.sock ] && command -v dockerd >/dev/null; then
        log "starting dockerd in the background (log: $work/dockerd.log)"
        dockerd >"$work/dockerd.log" 2>&1 &
        started_dockerd=$!
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            sleep 0.5
        done
    fi
    docker info >/dev/null 2>&1 || { log "no Docker daemon reachable"; exit 1; }
fi

# --- the user image ----------------------------------------------------------
busybox="${BUSYBOX:-$(command -v busybox || true)}"
[ -n "$busybox" ] || { log "busybox not found (apt-get install busybox-static)"; exit 1; }
ctx="$work/image"
rm -rf "$ctx" && mkdir -p "$ctx"
cp "$here/image/Dockerfile" "$here/image/entrypoint.sh" "$ctx/"
cp "$(readlink -f "$busybox")" "$ctx/busybox"
log "building $IMAGE"
docker build -q -t "$IMAGE" "$ctx" >/dev/null

# --- configurable-http-proxy ---------------------------------------------------
chp_dir="$work/chp"
chp="$chp_dir/node_modules/.bin/configurable-http-proxy"
if [ ! -x "$chp" ] || ! grep -q "\"version\": \"$CHP_VERSION\"" \
        "$chp_dir/node_modules/configurable-http-proxy/package.json" 2>/dev/null; then
    log "installing configurable-http-proxy $CHP_VERSION into $chp_dir"
    mkdir -p "$chp_dir"
    cat >"$chp_dir/package.json" <<JSON
{
  "name": "privledger-e2e-proxy",
  "private": true,
  "dependencies": { "configurable-http-proxy": "$CHP_VERSION" }
}
JSON
    (cd "$chp_dir" && npm install --no-audit --no-fund --loglevel=error)
fi

# --- Python ------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install --upgrade --force-reinstall --no-deps "$client"
"${pip[@]}" install "$client" "jupyterhub==$JUPYTERHUB_VERSION" \
    "dockerspawner==$DOCKERSPAWNER_VERSION" "pytest==$PYTEST_VERSION"
rm -rf "$client/build" "$client"/*.egg-info

export PRIVLEDGER_E2E_CHP="$chp" PRIVLEDGER_E2E_IMAGE="$IMAGE"
cd "$here"
set +e
"$venv/bin/pytest" -p no:cacheprovider -v test_e2e.py "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then log "pytest collected no tests"; exit 1; fi
exit "$rc"
