#!/usr/bin/env bash
# Cluster benchmarks (issue 16): 3 etcd members + 3 release nodes + 1 single node.
set -u
W=/tmp/bc
. "$(dirname "$0")/cluster-lib.sh"
for i in 1 2 3; do node $i; sleep 1; done
mkdir -m 700 $W/single
(setsid $P serve --data $W/single --listen 127.0.0.1:51069 --docker off >$W/single.log 2>&1 &)
sleep 3
export PRIVLEDGER_TOKEN_FILE=$W/n1/admin.token
TS=$W/single/admin.token
echo "== populate"
$PB --server http://127.0.0.1:51061 populate --users 1000 --groups 100 --groups-per-user 4 --grants 200 --entries 0 2>&1 | tail -1
PRIVLEDGER_TOKEN_FILE=$TS $PB --server http://127.0.0.1:51069 populate --users 1000 --groups 100 --groups-per-user 4 --grants 200 --entries 0 2>&1 | tail -1
run() { # server token rpc conc
  PRIVLEDGER_TOKEN_FILE=$2 $PB --server $1 --json run --rpc $3 --concurrency $4 --users 1000 --warmup 1s --duration ${DUR:-5s} --rounds ${ROUNDS:-3} 2>/dev/null
}
T1=$W/n1/admin.token
echo "== authorize (durable appends) through the writer n1, a follower n2, the single node"
for c in 1 8 64; do
  echo "-- c=$c writer";   run http://127.0.0.1:51061 $T1 noop,authorize $c
  echo "-- c=$c follower"; run http://127.0.0.1:51062 $T1 authorize $c
  echo "-- c=$c single";   run http://127.0.0.1:51069 $TS noop,authorize $c
done
echo "== check-answer and check: follower vs single vs writer"
for c in 1 32; do
  echo "-- c=$c follower"; run http://127.0.0.1:51062 $T1 noop,check-answer,check $c
  echo "-- c=$c single";   run http://127.0.0.1:51069 $TS noop,check-answer,check $c
  echo "-- c=$c writer";   run http://127.0.0.1:51061 $T1 check-answer $c
done
echo "== etcd size"
for i in 1 2 3; do $P --server http://127.0.0.1:5106$i status --json; echo; done
ETCDCTL_API=3 etcdctl --endpoints=$EP endpoint status -w json
echo "== failover: kill -9 of the writer to the first acknowledged write (through the followers)"
for trial in 1 2 3; do
  wid=$($P --server http://127.0.0.1:51062 status --json | python3 -c "import json,sys; print(json.load(sys.stdin)['cluster']['writer_id'])")
  n=${wid#n}; others=$(for j in 1 2 3; do [ $j != $n ] && echo $j; done)
  pkill -9 -f "$W/n$n "
  t0=$(date +%s%N); k=0
  while :; do
    k=$((k+1)); j=$(echo $others | cut -d' ' -f$(( (k % 2) + 1 )))
    if $P --server http://127.0.0.1:5106$j --timeout 2s group create "fo-$trial-$k" >/dev/null 2>&1; then break; fi
  done
  t1=$(date +%s%N)
  echo "trial $trial: killed $wid; first acknowledged write after $(( (t1-t0)/1000000 )) ms ($k attempts)"
  node $n
  sleep 4
done
for i in 1 2 3; do $P --server http://127.0.0.1:5106$i verify; done
