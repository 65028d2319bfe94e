#!/usr/bin/env bash
# A Redis Cluster (three masters, one replica each) and a three-node
# RabbitMQ cluster on this machine, beside its own RabbitMQ (5672) and
# Redis (6379), which are never touched: other ports, node names of their
# own, everything in one directory. Facts: docs in
# ../shared/guides/CLUSTERS.md; used by `make chaos-clusters`
# (tests/clusters/).
#
#   scripts/clusters.sh start  [--dir DIR] [--name NAME] [--redis-port P]
#                              [--amqp-port P] [--owner-pid PID]
#   scripts/clusters.sh stop   [--dir DIR]
#   scripts/clusters.sh status [--dir DIR]
#   scripts/clusters.sh env    [--dir DIR]    # the URLs and ports, as shell variables
#   scripts/clusters.sh kill   [--dir DIR] redis PORT | rabbit N    # kill -9 one node
#   scripts/clusters.sh revive [--dir DIR]    # start every dead node again, wait until healthy
#   scripts/clusters.sh ctl    [--dir DIR] N ARGS...   # rabbitmqctl against node N (1-3)
#
# The environment gives the same: H5PAY_CLUSTERS_DIR (default
# /tmp/h5pay-clusters), H5PAY_CLUSTERS_NAME (node name prefix, default
# derived from the directory), H5PAY_CLUSTERS_REDIS_PORT (first of six
# consecutive ports; each also needs port+10000 for the cluster bus),
# H5PAY_CLUSTERS_AMQP_PORT (first of three; distribution ports are
# port+20000). Without ports, free ones are picked at random below the
# ephemeral port range (Redis 13000-15005 and 23000-25005, RabbitMQ
# 10000-12002 and 30000-32002).
#
# `start` is idempotent: a healthy set in DIR is reused (its URLs printed),
# a broken one torn down and started again. A failed start tears down what
# it started. With --owner-pid, a watchdog tears everything down once that
# process has gone (a test killed with SIGKILL leaves nothing behind).
# Needs root (the RabbitMQ nodes run as the rabbitmq user, sharing the
# cookie in /var/lib/rabbitmq, as rabbitmqctl does).
set -euo pipefail

SCRIPT=$(readlink -f "$0")
RABBIT_BIN=/usr/lib/rabbitmq/bin
RABBIT_HOME=/var/lib/rabbitmq

log() { printf 'clusters: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift

DIR=${H5PAY_CLUSTERS_DIR:-/tmp/h5pay-clusters}
NAME=${H5PAY_CLUSTERS_NAME:-}
REDIS_BASE=${H5PAY_CLUSTERS_REDIS_PORT:-}
AMQP_BASE=${H5PAY_CLUSTERS_AMQP_PORT:-}
OWNER_PID=
args=()
while [ $# -gt 0 ]; do
  # After `ctl N`, everything is rabbitmqctl's.
  if [ "$cmd" = ctl ] && [ ${#args[@]} -gt 0 ]; then args+=("$1"); shift; continue; fi
  case $1 in
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --redis-port) REDIS_BASE=${2:?--redis-port needs a value}; shift 2 ;;
    --amqp-port) AMQP_BASE=${2:?--amqp-port needs a value}; shift 2 ;;
    --owner-pid) OWNER_PID=${2:?--owner-pid needs a value}; shift 2 ;;
    -h|--help) usage ;;
    *) args+=("$1"); shift ;;
  esac
done
DIR=$(readlink -m "$DIR")
STATE=$DIR/state.env

# ---------------------------------------------------------------- tools

need_tools() {
  local missing=()
  for t in redis-server redis-cli runuser ss; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  for t in rabbitmq-server rabbitmqctl; do
    [ -x "$RABBIT_BIN/$t" ] || missing+=("$RABBIT_BIN/$t")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing: ${missing[*]} (apt-get install redis-server redis-tools rabbitmq-server iproute2 util-linux; make services installs the first three)"
  [ "$(id -u)" -eq 0 ] || die "run as root: the RabbitMQ nodes run as the rabbitmq user"
  id rabbitmq >/dev/null 2>&1 || die "no rabbitmq user (install rabbitmq-server)"
  [ -f "$RABBIT_HOME/.erlang.cookie" ] ||
    die "no Erlang cookie in $RABBIT_HOME (start the machine's RabbitMQ once: make services)"
}

# ---------------------------------------------------------------- ports

# Any TCP socket on the port, listening or not: an outgoing connection's
# local port blocks a later bind just as well.
listening() { [ -n "$(ss -Htan "sport = :$1" 2>/dev/null)" ]; }

# Prints BASE if BASE..BASE+COUNT-1 (and each +OFFSET) are free.
ports_free() {
  local base=$1 count=$2 offset=$3 p
  for ((p = base; p < base + count; p++)); do
    listening "$p" && return 1
    listening $((p + offset)) && return 1
  done
  return 0
}

# A random base in [lo, hi) with COUNT free ports (and their +OFFSET).
pick_ports() {
  local count=$1 offset=$2 lo=$3 hi=$4 base
  for _ in $(seq 1 50); do
    base=$((lo + RANDOM % (hi - lo)))
    if ports_free "$base" "$count" "$offset"; then
      echo "$base"
      return 0
    fi
  done
  die "no $count free ports found in $lo-$hi"
}

# ---------------------------------------------------------------- state

load_state() {
  [ -f "$STATE" ] || return 1
  # shellcheck disable=SC1090
  . "$STATE"
}

redis_ports() { local i; for ((i = 0; i < 6; i++)); do echo $((REDIS_BASE + i)); done; }
amqp_port() { echo $((AMQP_BASE + $1 - 1)); }
dist_port() { echo $((AMQP_BASE + 20000 + $1 - 1)); }
node_name() { echo "${NAME}-rmq$1@localhost"; }

print_env() {
  local seeds=() amqp=() p i
  for p in $(redis_ports); do seeds+=("redis://127.0.0.1:$p"); done
  for i in 1 2 3; do amqp+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/"); done
  echo "H5PAY_CLUSTERS_DIR=$DIR"
  echo "H5PAY_CLUSTERS_NAME=$NAME"
  echo "REDIS_PORTS=\"$(redis_ports | tr '\n' ' ' | sed 's/ $//')\""
  echo "REDIS_URLS=$(IFS=,; echo "${seeds[*]}")"
  echo "AMQP_PORTS=\"$(for i in 1 2 3; do amqp_port "$i"; done | tr '\n' ' ' | sed 's/ $//')\""
  echo "AMQP_URLS=$(IFS=,; echo "${amqp[*]}")"
  echo "RABBIT_NODES=\"$(for i in 1 2 3; do node_name "$i"; done | tr '\n' ' ' | sed 's/ $//')\""
}

# ---------------------------------------------------------------- Redis

redis_dir() { echo "$DIR/redis-$1"; }

# The pid of our redis-server on PORT (checked against its working directory).
redis_pid() {
  local port=$1 pidfile pid
  pidfile=$(redis_dir "$port")/redis.pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(redis_dir "$port")" ] || return 1
  echo "$pid"
}

rcli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

redis_start_node() {
  local port=$1 d
  d=$(redis_dir "$port")
  mkdir -p "$d"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --dir "$d" --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --cluster-require-full-coverage no \
    --appendonly yes --appendfsync everysec --save '' >/dev/null
}

redis_wait_ping() {
  local port=$1 log
  for _ in $(seq 1 300); do
    [ "$(rcli "$port" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  log=$(redis_dir "$port")/redis.log
  die "redis on $port does not answer within 30s; its log ends:
$(tail -5 "$log" 2>/dev/null)"
}

# Every node says cluster_state:ok, three masters with slots, three
# replicas with their link up.
redis_healthy() {
  local p masters=0 replicas=0 info
  for p in $(redis_ports); do
    rcli "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    info=$(rcli "$p" info replication 2>/dev/null) || return 1
    if grep -q '^role:master' <<<"$info"; then
      masters=$((masters + 1))
    elif grep -q '^master_link_status:up' <<<"$info"; then
      replicas=$((replicas + 1))
    else
      return 1
    fi
  done
  [ "$masters" -eq 3 ] && [ "$replicas" -eq 3 ] &&
    [ "$(rcli "$REDIS_BASE" cluster nodes 2>/dev/null | grep -c 'master' )" -ge 3 ]
}

redis_wait_healthy() {
  local secs=$1
  for _ in $(seq 1 $((secs * 5))); do
    redis_healthy && return 0
    sleep 0.2
  done
  return 1
}

redis_create() {
  local p addrs=()
  for p in $(redis_ports); do redis_start_node "$p"; done
  for p in $(redis_ports); do redis_wait_ping "$p"; addrs+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$DIR/redis-create.log" 2>&1 || die "redis-cli --cluster create failed: $(tail -5 "$DIR/redis-create.log")"
}

# ---------------------------------------------------------------- RabbitMQ

rabbit_dir() { echo "$DIR/rabbit$1"; }

rabbit_env() {
  local n=$1 d
  d=$(rabbit_dir "$n")
  echo HOME=$RABBIT_HOME
  echo RABBITMQ_NODENAME="$(node_name "$n")"
  echo RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  echo RABBITMQ_NODE_PORT="$(amqp_port "$n")"
  echo RABBITMQ_DIST_PORT="$(dist_port "$n")"
  echo RABBITMQ_MNESIA_BASE="$d/mnesia"
  echo RABBITMQ_LOG_BASE="$d/log"
  echo RABBITMQ_PID_FILE="$d/pid"
  echo RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
  echo RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
  echo RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  echo RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins-expand"
  echo RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf"
  echo "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none"
  echo ERL_EPMD_ADDRESS=127.0.0.1
}

as_rabbit() {
  local n=$1
  shift
  local envs=()
  mapfile -t envs < <(rabbit_env "$n")
  runuser -u rabbitmq -- env "${envs[@]}" "$@"
}

# rabbitmqctl against node N.
ctl() {
  local n=$1
  shift
  runuser -u rabbitmq -- env HOME=$RABBIT_HOME ERL_EPMD_ADDRESS=127.0.0.1 \
    "$RABBIT_BIN/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

# The pids of node N's processes (found by the node name in their
# environment: a pid file can outlive its process).
rabbit_pids() {
  local want p
  want="RABBITMQ_NODENAME=$(node_name "$1")"
  for p in $(pgrep -u rabbitmq 2>/dev/null || true); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = epmd ] && continue
    if tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qx "$want"; then
      echo "$p"
    fi
  done
}

rabbit_beam() {
  local p
  for p in $(rabbit_pids "$1"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = beam.smp ] && { echo "$p"; return 0; }
  done
  return 1
}

rabbit_start_node() {
  local n=$1 d
  d=$(rabbit_dir "$n")
  mkdir -p "$d/mnesia" "$d/log" "$d/plugins-expand"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
cluster_partition_handling = pause_minority
raft.wal_max_size_bytes = 64000000
vm_memory_high_watermark.absolute = 1GB
log.console = false
log.file.level = info
EOF
  echo '[].' >"$d/advanced.config"
  echo '[].' >"$d/enabled_plugins"
  cat >"$d/rabbitmq-env.conf" <<EOF
NODENAME=$(node_name "$n")
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  chown -R rabbitmq:rabbitmq "$d"
  (cd "$RABBIT_HOME" && as_rabbit "$n" "$RABBIT_BIN/rabbitmq-server" -detached) \
    >"$d/start.log" 2>&1 || die "rabbitmq node $n did not start: $(tail -5 "$d/start.log")"
}

# The end of node N's logs, for a failure message (the directory goes
# with the teardown).
rabbit_diag() {
  local d f
  d=$(rabbit_dir "$1")
  for f in "$d/start.log" "$d"/log/*.log; do
    [ -s "$f" ] || continue
    echo "--- $f"
    grep -iE 'error|crash|fail|eaddrinuse|refused' "$f" | tail -8
    tail -3 "$f"
  done
}

rabbit_await() {
  local n=$1 secs=$2
  timeout "$secs" bash -c "until [ -s '$(rabbit_dir "$n")/pid' ]; do sleep 0.2; done" ||
    die "rabbitmq node $n wrote no pid file within ${secs}s:
$(rabbit_diag "$n")"
  ctl "$n" await_startup --timeout "$secs" >/dev/null 2>&1 ||
    die "rabbitmq node $n did not start within ${secs}s:
$(rabbit_diag "$n")"
}

# Three nodes running in one cluster, as node N sees it.
rabbit_running_nodes() {
  ctl "$1" cluster_status --formatter json 2>/dev/null |
    grep -o '"running_nodes":\[[^]]*\]' | grep -o "${NAME}-rmq[0-9]@localhost" | sort -u | wc -l
}

rabbit_healthy() {
  local n
  for n in 1 2 3; do rabbit_beam "$n" >/dev/null || return 1; done
  [ "$(rabbit_running_nodes 1)" -eq 3 ]
}

rabbit_create() {
  local n
  for n in 1 2 3; do rabbit_start_node "$n"; done
  for n in 1 2 3; do rabbit_await "$n" 120; done
  for n in 2 3; do
    { ctl "$n" stop_app && ctl "$n" join_cluster "$(node_name 1)" && ctl "$n" start_app; } \
      >>"$DIR/rabbit-join.log" 2>&1 || die "node $n could not join node 1: $(tail -5 "$DIR/rabbit-join.log")"
  done
  for _ in $(seq 1 60); do
    [ "$(rabbit_running_nodes 1)" -eq 3 ] && return 0
    sleep 1
  done
  die "the RabbitMQ nodes did not form one cluster"
}

# ---------------------------------------------------------------- commands

teardown() {
  local p n
  load_state || { [ -d "$DIR" ] && rm -rf "$DIR"; return 0; }
  if [ -n "${WATCHDOG_PID:-}" ] && [ "$WATCHDOG_PID" != "$$" ] && [ "$WATCHDOG_PID" != "$PPID" ] &&
    [ -d "/proc/$WATCHDOG_PID" ] && grep -q clusters "/proc/$WATCHDOG_PID/cmdline" 2>/dev/null; then
    kill "$WATCHDOG_PID" 2>/dev/null || true
  fi
  for n in 1 2 3; do
    for p in $(rabbit_pids "$n"); do kill -9 "$p" 2>/dev/null || true; done
  done
  for p in $(redis_ports); do
    if pid=$(redis_pid "$p"); then kill -9 "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$DIR"
}

healthy() { redis_healthy && rabbit_healthy; }

write_state() {
  cat >"$STATE" <<EOF
NAME=$NAME
REDIS_BASE=$REDIS_BASE
AMQP_BASE=$AMQP_BASE
OWNER_PID=$OWNER_PID
WATCHDOG_PID=${WATCHDOG_PID:-}
EOF
}

start_watchdog() {
  [ -n "$OWNER_PID" ] || return 0
  [ -d "/proc/$OWNER_PID" ] || die "--owner-pid $OWNER_PID: no such process"
  setsid bash -c "while kill -0 $OWNER_PID 2>/dev/null; do sleep 1; done; exec '$SCRIPT' stop --dir '$DIR'" \
    clusters-watchdog >/dev/null 2>&1 </dev/null &
  WATCHDOG_PID=$!
}

start() {
  need_tools
  if load_state && healthy; then
    log "already running in $DIR"
    print_env
    return 0
  fi
  teardown
  [ -n "$NAME" ] || NAME="h5pay-$(printf '%s' "$DIR" | md5sum | cut -c1-6)"
  [[ "$NAME" =~ ^[A-Za-z0-9_-]+$ ]] || die "--name: letters, digits, _ and - only"
  # Picked below the kernel's ephemeral range (32768 and up by default),
  # where outgoing connections take their local ports: a bus or
  # distribution port there can be taken between the pick and the bind.
  if [ -z "$REDIS_BASE" ]; then
    REDIS_BASE=$(pick_ports 6 10000 13000 15000)
  else
    ports_free "$REDIS_BASE" 6 10000 || die "ports $REDIS_BASE-$((REDIS_BASE + 5)) (or +10000) are in use"
  fi
  if [ -z "$AMQP_BASE" ]; then
    AMQP_BASE=$(pick_ports 3 20000 10000 12000)
  else
    ports_free "$AMQP_BASE" 3 20000 || die "ports $AMQP_BASE-$((AMQP_BASE + 2)) (or +20000) are in use"
  fi
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  RABBIT_JOB=
  trap 'rc=$?; if [ $rc -ne 0 ]; then
      log "start failed: tearing down"
      [ -n "$RABBIT_JOB" ] && kill "$RABBIT_JOB" 2>/dev/null && wait "$RABBIT_JOB" 2>/dev/null
      teardown
    fi' EXIT
  write_state
  local t0=$SECONDS
  # The RabbitMQ nodes boot in the background while Redis forms.
  (rabbit_create) &
  RABBIT_JOB=$!
  local rabbit_job=$RABBIT_JOB
  redis_create
  redis_wait_healthy 30 || die "the Redis Cluster did not become healthy within 30s"
  wait "$rabbit_job" || die "the RabbitMQ cluster did not form"
  start_watchdog
  write_state
  trap - EXIT
  log "started in $((SECONDS - t0))s ($DIR)"
  print_env
}

status() {
  load_state || { echo "not running ($DIR)"; return 1; }
  local p role n ok=0
  print_env
  for p in $(redis_ports); do
    if redis_pid "$p" >/dev/null; then
      role=$(rcli "$p" info replication 2>/dev/null | grep '^role:' | tr -d '\r' | cut -d: -f2)
      echo "redis 127.0.0.1:$p up ${role:-?}"
    else
      echo "redis 127.0.0.1:$p down"
    fi
  done
  for n in 1 2 3; do
    if rabbit_beam "$n" >/dev/null; then
      echo "rabbit $(node_name "$n") (127.0.0.1:$(amqp_port "$n")) up"
    else
      echo "rabbit $(node_name "$n") (127.0.0.1:$(amqp_port "$n")) down"
    fi
  done
  redis_healthy && echo "redis cluster: healthy" || { echo "redis cluster: not healthy"; ok=1; }
  rabbit_healthy && echo "rabbitmq cluster: healthy" || { echo "rabbitmq cluster: not healthy"; ok=1; }
  return $ok
}

kill_node() {
  load_state || die "not running ($DIR)"
  local kind=${1:-} which=${2:-} pid p
  case $kind in
    redis)
      redis_ports | grep -qx "$which" || die "kill redis PORT: one of $(redis_ports | tr '\n' ' ')"
      pid=$(redis_pid "$which") || die "redis on $which is not running"
      kill -9 "$pid"
      echo "killed redis 127.0.0.1:$which (pid $pid)"
      ;;
    rabbit)
      [[ "$which" =~ ^[123]$ ]] || die "kill rabbit N: N is 1, 2 or 3"
      pid=$(rabbit_beam "$which") || die "rabbit node $which is not running"
      for p in $(rabbit_pids "$which"); do kill -9 "$p" 2>/dev/null || true; done
      echo "killed $(node_name "$which") (beam pid $pid)"
      ;;
    *) die "kill redis PORT | kill rabbit N" ;;
  esac
}

revive() {
  load_state || die "not running ($DIR)"
  local p n started=()
  for p in $(redis_ports); do
    redis_pid "$p" >/dev/null || { redis_start_node "$p"; started+=("redis:$p"); }
  done
  for n in 1 2 3; do
    if ! rabbit_beam "$n" >/dev/null; then
      rm -f "$(rabbit_dir "$n")/pid"
      rabbit_start_node "$n"
      started+=("rabbit:$n")
    fi
  done
  for n in 1 2 3; do
    [[ " ${started[*]} " == *" rabbit:$n "* ]] && rabbit_await "$n" 120
  done
  redis_wait_healthy 60 || die "the Redis Cluster is not healthy again"
  for _ in $(seq 1 60); do
    rabbit_healthy && break
    sleep 1
  done
  rabbit_healthy || die "the RabbitMQ cluster is not whole again"
  echo "revived: ${started[*]:-nothing was down}"
}

case $cmd in
  start) start ;;
  stop) teardown; log "stopped ($DIR)" ;;
  status) status ;;
  env) load_state || die "not running ($DIR)"; print_env ;;
  kill) kill_node "${args[@]}" ;;
  revive) need_tools; revive ;;
  ctl)
    load_state || die "not running ($DIR)"
    [ ${#args[@]} -ge 2 ] || die "ctl N ARGS..."
    ctl "${args[@]}"
    ;;
  *) usage ;;
esac
