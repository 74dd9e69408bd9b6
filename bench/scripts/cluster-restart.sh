#!/usr/bin/env bash
# A follower's restart with the writer's checkpoints kept, against the same follower
# restarted with its checkpoints removed (a full replay), in one run: 3 etcd members
# and 3 release nodes on this machine. Also each node's RSS after the fill.
set -u
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
P=$B/privledger; PB=$B/privledger-bench
ENTRIES=${ENTRIES:-200000}
W=/tmp/bcr; rm -rf $W; mkdir -p $W; cd $W
trap 'pkill -f "$W/" 2>/dev/null' EXIT
IC="e1=http://127.0.0.1:24811,e2=http://127.0.0.1:24812,e3=http://127.0.0.1:24813"
for i in 1 2 3; do
  (setsid etcd --name e$i --data-dir $W/e$i --listen-client-urls http://127.0.0.1:2482$i --advertise-client-urls http://127.0.0.1:2482$i \
    --listen-peer-urls http://127.0.0.1:2481$i --initial-advertise-peer-urls http://127.0.0.1:2481$i --initial-cluster $IC \
    --initial-cluster-state new --initial-cluster-token benchr --log-level warn >$W/e$i.log 2>&1 &)
done
sleep 3
EP=http://127.0.0.1:24821,http://127.0.0.1:24822,http://127.0.0.1:24823
node() { (setsid $P serve --data $W/n$1 --listen 127.0.0.1:5107$1 --docker off --etcd-endpoints $EP --node-id n$1 >>$W/n$1.log 2>&1 &); }
for i in 1 2 3; do mkdir -m 700 $W/n$i; node $i; sleep 1; done
sleep 2
export PRIVLEDGER_TOKEN_FILE=$W/n1/admin.token
echo "== populate through the writer n1"
$PB --server http://127.0.0.1:51071 populate --users 10000 --groups 1000 --grants 5000 --entries $ENTRIES 2>&1 | tail -1
applied() { $P --server http://127.0.0.1:5107$1 --timeout 1s status --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['cluster']['applied_seq'])" 2>/dev/null || echo 0; }
head=$(applied 1)
while [ "$(applied 2)" -lt "$head" ]; do sleep 0.2; done
echo "head $head; checkpoints kept by the follower n2: $(ls $W/n2/checkpoints | tr '\n' ' ')"
echo "== RSS after the fill (kB)"
for i in 1 2 3; do pid=$(pgrep -f "$W/n$i "); echo "n$i $(grep VmRSS /proc/$pid/status)"; done
restart() { # label
  pkill -TERM -f "$W/n2 "; while pgrep -f "$W/n2 " >/dev/null; do sleep 0.05; done
  [ "$1" = replay ] && rm -rf $W/n2/checkpoints
  : >$W/n2.log; t0=$(date +%s%N); node 2
  while [ "$(applied 2)" -lt "$head" ]; do sleep 0.02; done
  t1=$(date +%s%N)
  echo "$1: answering at the head $(( (t1-t0)/1000000 )) ms after launch; $(grep -o 'checkpoint=[0-9]* replayed=[0-9]*' $W/n2.log | head -1)"
}
echo "== restarts of the follower n2"
for r in 1 2 3; do restart kept; done
restart replay
