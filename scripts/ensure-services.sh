#!/usr/bin/env bash
# Makes sure Postgres and RabbitMQ (with its management API, which the tests use to
# create per-test vhosts) are reachable on loopback. Already running -> nothing to do;
# installed but stopped -> start; absent -> apt-get install, then start.
# Idempotent and quiet when all is well.
set -euo pipefail

PG_HOST=${PGHOST_CHECK:-127.0.0.1}
PG_PORT=${PGPORT_CHECK:-5432}
AMQP_PORT=${AMQP_PORT_CHECK:-5672}
MGMT_PORT=${RABBITMQ_MGMT_PORT_CHECK:-15672}

say() { echo "ensure-services: $*" >&2; }
die() { say "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 4; i++)); do port_open "$1" "$2" && return 0; sleep 0.25; done
  return 1
}

apt_updated=0
apt_install() {
  [ "$(id -u)" = 0 ] || die "$* is not installed and I am not root: install it (apt-get install -y $*) or start it yourself."
  command -v apt-get >/dev/null || die "$* is not installed and there is no apt-get: install and start it yourself."
  if [ $apt_updated = 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  port_open "$PG_HOST" "$PG_PORT" && return 0
  local fresh=0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
    fresh=1
  fi
  local ver
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  if [ $fresh = 1 ]; then
    # A fresh Debian cluster asks for passwords on TCP; the local dev/CI setup
    # connects as `postgres` without one, like the machine this project is built on.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
      "/etc/postgresql/$ver/main/pg_hba.conf"
  fi
  say "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 ||
    pg_ctlcluster "$ver" main start
  wait_port "$PG_HOST" "$PG_PORT" 60 || die "PostgreSQL did not open $PG_HOST:$PG_PORT within 60 s"
}

ensure_rabbitmq() {
  if ! port_open 127.0.0.1 "$AMQP_PORT"; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    # The management API creates the tests' vhosts; enabling offline needs no node.
    rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 127.0.0.1 "$AMQP_PORT" 120 || die "RabbitMQ did not open port $AMQP_PORT within 120 s"
  fi
  if ! port_open 127.0.0.1 "$MGMT_PORT"; then
    say "enabling rabbitmq_management"
    rabbitmq-plugins enable rabbitmq_management >/dev/null
    wait_port 127.0.0.1 "$MGMT_PORT" 60 || die "RabbitMQ management API did not open port $MGMT_PORT"
  fi
}

ensure_postgres
ensure_rabbitmq
