#!/usr/bin/env bash
# The limited socket against the daemon's own socket, same client, same calls (the
# "limited socket" section of BENCHMARKS.md). Needs the release binaries
# (`cargo build --release --bins -p privledger -p privledger-bench`), a Docker daemon
# and the privledger-test-busybox image. SAMPLES=300 by default.
set -euo pipefail
B=${B:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release}
P=$B/privledger; PB=$B/privledger-bench
W=${W:-/tmp/privledger-proxybench}
rm -rf "$W"; mkdir -p -m 700 "$W/data"; mkdir -p "$W/users"
trap 'pkill -f "$W/" 2>/dev/null || true' EXIT
PORT=${PORT:-51091}
(setsid $P serve --data $W/data --listen 127.0.0.1:$PORT --limited-host-dir $W/users >$W/serve.log 2>&1 &)
S="--server http://127.0.0.1:$PORT --token-file $W/data/admin.token"
for _ in $(seq 1 100); do $P status $S >/dev/null 2>&1 && break; sleep 0.1; done
$P grant issue $S --user benchuser --socket limited --max-containers 100 --reason bench >/dev/null
$P authorize $S benchuser --image privledger-test-busybox:latest >/dev/null
$PB $S proxy --direct /var/run/docker.sock --via $W/users/benchuser/docker.sock \
  --image privledger-test-busybox:latest --samples "${SAMPLES:-300}"
# The benchmark's containers carry the owner label: remove what is left.
docker ps -aq --filter label=privledger.owner=benchuser | xargs -r docker rm -f >/dev/null
