#!/usr/bin/env bash
# Installs the privledger-jupyterhub package and its test tools into a virtualenv,
# then runs its pytest suite against a real privledger server.
#
#   PRIVLEDGER_BIN      the privledger binary (default: <repo>/target/debug/privledger;
#                       it is never built here)
#   PRIVLEDGER_PY_VENV  virtualenv to use or create (default: clients/python/.venv)
#   PYTHON              interpreter that creates the virtualenv (default: python3)
#   PRIVLEDGER_E2E=1    also run the JupyterHub + Docker end-to-end test (e2e/run.sh)
#
# Extra arguments go to pytest. Exits non-zero on any failure, including "no tests
# collected" (pytest exit code 5).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${PRIVLEDGER_PY_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

# Pins: grpcio-tools must match the generator pin in pyproject.toml ([gen]).
GRPCIO_TOOLS_VERSION=1.85.1
PYTEST_VERSION=9.2.0
# The compose example is checked by parsing it.
PYYAML_VERSION=6.0.3
# The KubeSpawner hook is tested against the real package (offline): the JupyterHub
# version is the end-to-end test's.
KUBESPAWNER_VERSION=7.1.0
JUPYTERHUB_VERSION=5.5.4
export PRIVLEDGER_REQUIRE_KUBESPAWNER=1

export PRIVLEDGER_BIN="${PRIVLEDGER_BIN:-$repo/target/debug/privledger}"
case "$PRIVLEDGER_BIN" in /*) ;; *) PRIVLEDGER_BIN="$repo/$PRIVLEDGER_BIN" ;; esac
if [ ! -x "$PRIVLEDGER_BIN" ]; then
    echo "ci.sh: privledger binary not found or not executable: $PRIVLEDGER_BIN" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install --upgrade pip
# A real (non-editable) install: the tests must import what users would install.
"${pip[@]}" install --upgrade --force-reinstall --no-deps "$here"
"${pip[@]}" install "$here" "pytest==$PYTEST_VERSION" "grpcio-tools==$GRPCIO_TOOLS_VERSION" "pyyaml==$PYYAML_VERSION" \
    "jupyterhub==$JUPYTERHUB_VERSION" "jupyterhub-kubespawner==$KUBESPAWNER_VERSION"
rm -rf "$here/build" "$here"/*.egg-info

# Run from the test directory's parent with the venv's pytest (not `python -m`,
# which would put the source tree first on sys.path).
cd "$here"
installed="$(cd / && "$venv/bin/python" -c 'import privledger_jupyterhub as p; print(p.__file__)')"
echo "ci.sh: testing $installed against $PRIVLEDGER_BIN"
set +e
"$venv/bin/pytest" -p no:cacheprovider -rfEs tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "ci.sh: pytest collected no tests" >&2
    exit 1
fi
if [ "$rc" -ne 0 ]; then
    exit "$rc"
fi

if [ "${PRIVLEDGER_E2E:-0}" = "1" ]; then
    "$here/e2e/run.sh"
fi
