#!/usr/bin/env bash
# Where the time of a cluster append goes: writer metrics + etcd's own, at 1 and 64 callers.
set -u
W=/tmp/bw
. "$(dirname "$0")/cluster-lib.sh"
for i in 1 2 3; do node $i --metrics-listen 127.0.0.1:5107$i; sleep 1; done
sleep 2
export PRIVLEDGER_TOKEN_FILE=$W/n1/admin.token
$PB --server http://127.0.0.1:51061 populate --users 1000 --groups 100 --groups-per-user 4 --grants 200 --entries 0 2>&1 | tail -1
snap() { curl -s http://127.0.0.1:51071/metrics | grep -E '^privledger_writer_(batch_entries|flush_seconds)_(sum|count)'; for i in 1 2 3; do curl -s http://127.0.0.1:2479$i/metrics | grep -E '^etcd_disk_(wal_fsync|backend_commit)_duration_seconds_(sum|count)'; done; }
for c in 1 64; do
  echo "== c=$c before"; snap
  # Who has the CPU meanwhile: top's second sample (3 s, from 2 s into the run).
  ( sleep 2; top -b -d 3 -n 2 -w 200 | awk '/^top -/{n++} n==2' | grep -E '^%Cpu|privledger|etcd' ) &
  $PB --server http://127.0.0.1:51061 --json run --rpc authorize --concurrency $c --users 1000 --warmup 0s --duration 5s --rounds 1 2>/dev/null | python3 -c "import json,sys; r=json.load(sys.stdin)['results'][0]; print('rps', r['rps'], 'p50_us', r['p50_us'])"
  wait
  echo "== c=$c after"; snap
done
