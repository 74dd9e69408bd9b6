#!/usr/bin/env bash
# Where the time of a cluster append goes: writer metrics + etcd's own, at 1 and 64 callers.
set -u
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}; P=$B/privledger; PB=$B/privledger-bench
W=/tmp/bw; rm -rf $W; mkdir -p $W; cd $W
# Everything started here runs with its data under $W: stopped by that, at the end.
trap 'pkill -f "$W/" 2>/dev/null' EXIT
IC="e1=http://127.0.0.1:24801,e2=http://127.0.0.1:24802,e3=http://127.0.0.1:24803"
for i in 1 2 3; do
  (setsid etcd --name e$i --data-dir $W/e$i --listen-client-urls http://127.0.0.1:2479$i --advertise-client-urls http://127.0.0.1:2479$i \
    --listen-peer-urls http://127.0.0.1:2480$i --initial-advertise-peer-urls http://127.0.0.1:2480$i --initial-cluster $IC \
    --initial-cluster-state new --initial-cluster-token bench --log-level warn >$W/e$i.log 2>&1 &)
done
sleep 3
EP=http://127.0.0.1:24791,http://127.0.0.1:24792,http://127.0.0.1:24793
for i in 1 2 3; do
  mkdir -m 700 $W/n$i
  (setsid $P serve --data $W/n$i --listen 127.0.0.1:5106$i --docker off --etcd-endpoints $EP --node-id n$i --metrics-listen 127.0.0.1:5107$i >$W/n$i.log 2>&1 &)
  sleep 1
done
sleep 2
export PRIVLEDGER_TOKEN_FILE=$W/n1/admin.token
$PB --server http://127.0.0.1:51061 populate --users 1000 --groups 100 --groups-per-user 4 --grants 200 --entries 0 2>&1 | tail -1
snap() { curl -s http://127.0.0.1:51071/metrics | grep -E '^privledger_writer_(batch_entries|flush_seconds)_(sum|count)'; for i in 1 2 3; do curl -s http://127.0.0.1:2479$i/metrics | grep -E '^etcd_disk_(wal_fsync|backend_commit)_duration_seconds_(sum|count)'; done; }
for c in 1 64; do
  echo "== c=$c before"; snap
  $PB --server http://127.0.0.1:51061 --json run --rpc authorize --concurrency $c --users 1000 --warmup 0s --duration 5s --rounds 1 2>/dev/null | python3 -c "import json,sys; r=json.load(sys.stdin)['results'][0]; print('rps', r['rps'], 'p50_us', r['p50_us'])"
  echo "== c=$c after"; snap
done
top -b -n 1 | head -20
