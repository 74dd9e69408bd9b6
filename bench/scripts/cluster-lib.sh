# Sourced by the cluster scripts: the release binaries, three etcd members on loopback
# and `node I [FLAGS...]` to start node I of the cluster, everything with its data under
# $W (set by the script) and stopped when the script exits.
B=${B:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release}
P=$B/privledger; PB=$B/privledger-bench
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
trap 'pkill -f "$W/" 2>/dev/null' EXIT
IC="e1=http://127.0.0.1:24801,e2=http://127.0.0.1:24802,e3=http://127.0.0.1:24803"
for i in 1 2 3; do
  (setsid etcd --name e$i --data-dir $W/e$i --listen-client-urls http://127.0.0.1:2479$i --advertise-client-urls http://127.0.0.1:2479$i \
    --listen-peer-urls http://127.0.0.1:2480$i --initial-advertise-peer-urls http://127.0.0.1:2480$i --initial-cluster $IC \
    --initial-cluster-state new --initial-cluster-token bench --log-level warn >$W/e$i.log 2>&1 &)
done
sleep 3
EP=http://127.0.0.1:24791,http://127.0.0.1:24792,http://127.0.0.1:24793
# Node I listens on 127.0.0.1:5106I; its log is $W/nI.log (appended to on restarts).
node() {
  local i=$1; shift
  mkdir -p -m 700 $W/n$i
  (setsid $P serve --data $W/n$i --listen 127.0.0.1:5106$i --docker off --etcd-endpoints $EP --node-id n$i "$@" >>$W/n$i.log 2>&1 &)
}
