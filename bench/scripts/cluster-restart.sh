#!/usr/bin/env bash
# A follower's restart with the writer's checkpoints kept, against the same follower
# restarted with its checkpoints removed (a full replay), in one run: 3 etcd members
# and 3 release nodes on this machine. Also each node's RSS after the fill.
set -u
ENTRIES=${ENTRIES:-200000}
W=/tmp/bcr
. "$(dirname "$0")/cluster-lib.sh"
for i in 1 2 3; do node $i; sleep 1; done
sleep 2
export PRIVLEDGER_TOKEN_FILE=$W/n1/admin.token
echo "== populate through the writer n1"
$PB --server http://127.0.0.1:51061 populate --users 10000 --groups 1000 --grants 5000 --entries $ENTRIES 2>&1 | tail -1
applied() { $P --server http://127.0.0.1:5106$1 --timeout 1s status --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['cluster']['applied_seq'])" 2>/dev/null || echo 0; }
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
