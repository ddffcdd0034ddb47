#!/usr/bin/env bash
# The local healthbook stack without Docker: Apache Kafka (KRaft, single node) from
# Maven Central and PostgreSQL from Debian's packages, both on 127.0.0.1.
#   stack/stack.sh up | down | status
# Settings (environment): KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093),
# HEALTHBOOK_PG_USER / HEALTHBOOK_PG_PASSWORD / HEALTHBOOK_PG_DATABASE (healthbook).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kafka_home="$here/.kafka"
kafka_lib="$kafka_home/lib"
kafka_data="$kafka_home/data"
kafka_conf="$kafka_home/config"
kafka_logs="$kafka_home/logs"
kafka_pid="$kafka_home/kafka.pid"
kafka_port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
pg_user="${HEALTHBOOK_PG_USER:-healthbook}"
pg_password="${HEALTHBOOK_PG_PASSWORD:-healthbook}"
pg_database="${HEALTHBOOK_PG_DATABASE:-healthbook}"

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$2"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&-
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------- Kafka
kafka_fetch() {
  if compgen -G "$kafka_lib/kafka_2.13-*.jar" >/dev/null; then return; fi
  need java "java is missing: install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)."
  need mvn "mvn is missing: install Apache Maven (Debian: apt-get install maven) so the Kafka broker can be resolved from Maven Central."
  say "resolving the Kafka broker from Maven Central into $kafka_lib"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$kafka_lib" -DincludeScope=runtime
}

kafka_configure() {
  mkdir -p "$kafka_conf" "$kafka_data" "$kafka_logs"
  cat >"$kafka_conf/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$kafka_data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
  cat >"$kafka_conf/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $kafka_logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
PROPS
}

kafka_java() {
  java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$kafka_conf/log4j2.properties" \
    -cp "$kafka_lib/*" "$@"
}

kafka_running() {
  [ -f "$kafka_pid" ] && kill -0 "$(cat "$kafka_pid")" 2>/dev/null
}

kafka_up() {
  kafka_fetch
  kafka_configure
  if kafka_running; then say "Kafka already running (pid $(cat "$kafka_pid")) on 127.0.0.1:$kafka_port"; return; fi
  if port_open "$kafka_port"; then die "port $kafka_port is taken by another program: stop it or set KAFKA_PORT."; fi
  if [ ! -f "$kafka_data/meta.properties" ]; then
    say "formatting Kafka storage in $kafka_data (once)"
    kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
      -c "$kafka_conf/server.properties" >"$kafka_logs/format.log" 2>&1 \
      || die "formatting Kafka storage failed; see $kafka_logs/format.log"
  fi
  say "starting Kafka on 127.0.0.1:$kafka_port"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$kafka_conf/log4j2.properties" -cp "$kafka_lib/*" \
    kafka.Kafka "$kafka_conf/server.properties" >"$kafka_logs/stdout.log" 2>&1 &
  echo $! >"$kafka_pid"
  for _ in $(seq 1 120); do
    if port_open "$kafka_port"; then say "Kafka is up"; return; fi
    kafka_running || die "Kafka exited during start-up; see $kafka_logs/stdout.log and $kafka_logs/server.log"
    sleep 0.5
  done
  die "Kafka did not open 127.0.0.1:$kafka_port within 60 s; see $kafka_logs/server.log"
}

kafka_down() {
  if kafka_running; then
    local pid; pid="$(cat "$kafka_pid")"
    say "stopping Kafka (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$kafka_pid"
}

# ----------------------------------------------------------- PostgreSQL
pg_cluster() {
  pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1, $2, $3, $4}'
}

pg_install() {
  if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_cluster)" ]; then return; fi
  need apt-get "apt-get is missing: install PostgreSQL 15+ yourself and create the role and database named in README.md."
  say "installing PostgreSQL from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  [ -n "$(pg_cluster)" ] || as_root pg_createcluster "$(ls /usr/lib/postgresql | sort -n | tail -1)" main
}

pg_up() {
  pg_install
  read -r version name port status <<<"$(pg_cluster)"
  if [ "$status" != online ]; then
    say "starting PostgreSQL $version/$name on port $port"
    as_root pg_ctlcluster "$version" "$name" start
  else
    say "PostgreSQL $version/$name already running on port $port"
  fi
  for _ in $(seq 1 60); do port_open "$port" && break; sleep 0.5; done
  local psql=(as_root runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA)
  if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname='$pg_user'")" != 1 ]; then
    say "creating role $pg_user"
    "${psql[@]}" -c "create role $pg_user login createdb password '$pg_password'"
  fi
  if [ "$("${psql[@]}" -c "select 1 from pg_database where datname='$pg_database'")" != 1 ]; then
    say "creating database $pg_database"
    "${psql[@]}" -c "create database $pg_database owner $pg_user"
  fi
}

pg_down() {
  read -r version name _ status <<<"$(pg_cluster)"
  if [ "${status:-}" = online ]; then
    say "stopping PostgreSQL $version/$name"
    as_root pg_ctlcluster "$version" "$name" stop
  fi
}

status() {
  if kafka_running && port_open "$kafka_port"; then k="healthy (pid $(cat "$kafka_pid"))"; else k="down"; fi
  printf '%-11s %-22s %-10s %s\n' service listens status data
  printf '%-11s %-22s %-10s %s\n' kafka "127.0.0.1:$kafka_port" "$k" "$kafka_data"
  if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_cluster)" ]; then
    read -r version name port pstatus <<<"$(pg_cluster)"
    pdata="$(pg_lsclusters -h | awk 'NR==1 {print $6}')"
    if [ "$pstatus" = online ] && port_open "$port"; then p=healthy; else p=down; fi
    printf '%-11s %-22s %-10s %s\n' postgresql "127.0.0.1:$port" "$p" "$pdata ($version/$name)"
  else
    printf '%-11s %-22s %-10s %s\n' postgresql - "not installed" -
  fi
}

case "${1:-}" in
  up) pg_up; kafka_up ;;
  down) kafka_down; pg_down ;;
  status) status ;;
  kafka-up) kafka_up ;;
  kafka-down) kafka_down ;;
  pg-up) pg_up ;;
  pg-down) pg_down ;;
  *) echo "usage: stack/stack.sh up|down|status|kafka-up|kafka-down|pg-up|pg-down" >&2; exit 2 ;;
esac
