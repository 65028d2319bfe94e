#!/usr/bin/env bash
# Makes sure RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) answer.
# Uses running ones; else starts the installed ones; else installs Debian's
# rabbitmq-server and redis-server with apt-get and starts them. Waits until
# both answer. Never stops or flushes anything.
set -euo pipefail

log() { printf 'ensure-services: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root for: $*"; return 1
  fi
}

redis_up() {
  # PING over bash's /dev/tcp (no redis-cli needed), in a subshell so the
  # descriptor and any error stay there.
  (
    exec 3<>/dev/tcp/127.0.0.1/6379 || exit 1
    printf 'PING\r\n' >&3
    read -r -t 2 reply <&3 || exit 1
    [[ "$reply" == +PONG* ]]
  ) 2>/dev/null
}

rabbit_up() {
  # An AMQP 0-9-1 protocol header must be answered by connection.start (a
  # method frame: first byte 1).
  (
    exec 4<>/dev/tcp/127.0.0.1/5672 || exit 1
    printf 'AMQP\x00\x00\x09\x01' >&4
    first=$(timeout 3 head -c 1 <&4 | od -An -tu1 | tr -d ' ')
    [ "$first" = "1" ]
  ) 2>/dev/null
}

wait_for() {
  local name=$1 check=$2 seconds=$3
  for _ in $(seq 1 "$seconds"); do
    if $check; then log "$name answers"; return 0; fi
    sleep 1
  done
  log "$name did not answer within ${seconds}s"
  return 1
}

install_packages() {
  log "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if ! redis_up; then
  command -v redis-server >/dev/null 2>&1 || install_packages redis-server
  log "starting redis-server"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
    --dir /var/lib/redis --logfile /var/log/redis/h5pay-dev.log || true
  wait_for redis redis_up 30
fi

if ! rabbit_up; then
  command -v rabbitmq-server >/dev/null 2>&1 || install_packages rabbitmq-server
  log "starting rabbitmq-server"
  as_root rabbitmq-server -detached || true
  wait_for rabbitmq rabbit_up 120
fi

log "RabbitMQ and Redis are up"
