#!/usr/bin/env bash
# A Redis master with one replica, beside the machine's own Redis (ports
# 7410 and 7411, no persistence, in target/redis-replica), for measuring
# `redis.wait_replicas` (BENCHMARKS.md):
#   scripts/redis-replica.sh start   # then: h5pay-bench --redis-url redis://127.0.0.1:7410/0 --wait-replicas 1
#   scripts/redis-replica.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/redis-replica
master=7410; replica=7411
case "${1:-}" in
  start)
    mkdir -p "$dir"
    for p in $master $replica; do
      extra=()
      [ "$p" = "$replica" ] && extra=(--replicaof 127.0.0.1 "$master")
      redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$PWD/$dir" --daemonize yes --pidfile "$PWD/$dir/$p.pid" \
        --logfile "$PWD/$dir/$p.log" "${extra[@]}"
    done
    for _ in $(seq 100); do
      [ "$(redis-cli -p "$master" info replication | tr -d '\r' | sed -n 's/^connected_slaves://p')" = 1 ] && { echo "redis-replica: master :$master, replica :$replica"; exit 0; }
      sleep 0.1
    done
    echo "redis-replica: the replica did not connect" >&2; exit 1 ;;
  stop)
    for p in $replica $master; do
      [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    done ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
