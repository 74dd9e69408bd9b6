#!/usr/bin/env bash
# A build of a small context and a pull from a registry on loopback, through the
# limited socket against the daemon's own socket, with the same client (the docker
# CLI) in the same run (the "limited socket: images" section of BENCHMARKS.md).
# Needs the release binary (`cargo build --release --bins -p privledger`), a Docker
# daemon, Debian's docker-registry and the privledger-test-busybox image.
# RUNS=15 by default: each run times one build (and one pull) on each socket,
# alternating which goes first.
set -euo pipefail
B=${B:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release}
P=$B/privledger
W=${W:-/tmp/privledger-imagebench}
RUNS=${RUNS:-15}
rm -rf "$W"; mkdir -p -m 700 "$W/data"; mkdir -p "$W/users" "$W/reg" "$W/ctx"
PORT=${PORT:-51093}; REG=127.0.0.1:${REGPORT:-51094}
cleanup() {
  pkill -f "$W/" 2>/dev/null || true
  docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "^(benchuser/|$REG/)" | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker image prune -f --filter label=privledger.owner=benchuser >/dev/null 2>&1 || true
}
trap cleanup EXIT
cat >"$W/reg/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $W/reg/data
  delete:
    enabled: true
http:
  addr: $REG
EOF
(setsid docker-registry serve "$W/reg/config.yml" >"$W/reg.log" 2>&1 &)
(setsid $P serve --data $W/data --listen 127.0.0.1:$PORT --limited-host-dir $W/users >$W/serve.log 2>&1 &)
S="--server http://127.0.0.1:$PORT --token-file $W/data/admin.token"
for _ in $(seq 1 100); do $P status $S >/dev/null 2>&1 && curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
$P grant issue $S --user benchuser --socket limited --max-containers 100 --allow-build \
  --pull-allow "$REG/**" --max-storage-gb 100 --reason bench >/dev/null
$P authorize $S benchuser --image privledger-test-busybox:latest >/dev/null
docker tag privledger-test-busybox:latest "$REG/lib/busybox:bench"
docker push -q "$REG/lib/busybox:bench" >/dev/null
docker rmi "$REG/lib/busybox:bench" >/dev/null
# A small context: a Dockerfile with a COPY and a RUN, and 1 MiB of files. WORK=1 makes
# the RUN step do about a second of work, as a step that installs something would.
if [ "${WORK:-0}" = 1 ]; then
  run='i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; ls /ctx | wc -l > /count'
else
  run='ls /ctx | wc -l > /count'
fi
printf 'FROM privledger-test-busybox:latest\nCOPY . /ctx\nRUN ["/bin/sh", "-c", "%s"]\n' "$run" >"$W/ctx/Dockerfile"
for i in $(seq 1 16); do head -c 65536 /dev/urandom >"$W/ctx/f$i"; done

DIRECT=unix:///var/run/docker.sock
VIA=unix://$W/users/benchuser/docker.sock
now() { date +%s%N; }
timed() { # HOST ARGS...: wall milliseconds of one docker command
  local h=$1; shift
  local t0; t0=$(now)
  DOCKER_BUILDKIT=0 DOCKER_HOST=$h docker "$@" >/dev/null 2>&1 || { echo "failed: docker $*" >&2; exit 1; }
  echo $(( ($(now) - t0) / 1000000 ))
}
: >"$W/build.direct"; : >"$W/build.via"; : >"$W/build.labelled"; : >"$W/pull.direct"; : >"$W/pull.via"
# "asked": straight to the daemon with what the proxy adds to a build: the owner and
# decision labels (the daemon applies a build's labels as one more step) and the
# grant's memory and CPU caps (8 GB, 2 cores by default) on its RUN containers. That
# is the same work for the daemon; the difference to "via" is the proxy's own cost.
for r in $(seq 1 "$RUNS"); do
  order="direct via labelled"; [ $((r % 2)) = 0 ] && order="labelled via direct"
  for side in $order; do
    h=$DIRECT; [ "$side" = via ] && h=$VIA
    label=(); [ "$side" = labelled ] && label=(--label privledger.owner=benchuser
      --label privledger.decision=bench --memory 8g --memory-swap 8g
      --cpu-period 100000 --cpu-quota 200000)
    timed "$h" build --no-cache -q "${label[@]}" -t "benchuser/bench:$side$r" "$W/ctx" >>"$W/build.$side"
    docker rmi -f "benchuser/bench:$side$r" >/dev/null
    [ "$side" = labelled ] && continue
    timed "$h" pull -q "$REG/lib/busybox:bench" >>"$W/pull.$side"
    docker rmi "$REG/lib/busybox:bench" >/dev/null
  done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for what in build pull; do
  d=$(median "$W/$what.direct"); v=$(median "$W/$what.via")
  awk -v w="$what" -v d="$d" -v v="$v" -v n="$RUNS" \
    'BEGIN {printf "%-6s runs %d  daemon p50 %6.1f ms  proxy p50 %6.1f ms  ratio %.3f\n", w, n, d, v, v/d}'
done
l=$(median "$W/build.labelled"); v=$(median "$W/build.via")
awk -v l="$l" -v v="$v" \
  'BEGIN {printf "build  daemon asked the same (labels, caps) p50 %6.1f ms  proxy / that %.3f\n", l, v/l}'
