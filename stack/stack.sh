#!/usr/bin/env bash
# The local healthbook stack without Docker: Apache Kafka (KRaft, one node or a three-node cluster) from
# Maven Central and PostgreSQL from Debian's packages, both on 127.0.0.1.
#   stack/stack.sh up | down | status | secrets | add-principal NAME | observe | observe-down
# Kafka listens SASL_SSL only: TLS with a certificate from a local transport CA, SCRAM-SHA-512
# logins, and ACLs by KRaft's StandardAuthorizer (nothing is allowed without an ACL). The CA,
# the broker's key and one password per role principal are made at the first `up` under
# .local/kafka/ (owner-only, never committed); ACLs are granted by `healthbook topics`.
# Settings (environment): HEALTHBOOK_BROKERS (1, or 3 for a cluster of three KRaft nodes, each a
# broker and a controller voter), KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HOME_DIR
# (stack/.kafka: the nodes' data, configuration and logs; another folder and ports make a second stack),
# HEALTHBOOK_PG_USER / HEALTHBOOK_PG_PASSWORD / HEALTHBOOK_PG_DATABASE (healthbook).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kafka_home="${KAFKA_HOME_DIR:-$here/.kafka}"  # another folder (and ports) runs a second, independent stack
kafka_lib="$here/.kafka/lib"
secrets="$(cd "$here/.." && pwd)/.local/kafka"
tls="$secrets/tls"
credentials="$secrets/credentials"
# One SCRAM principal per role; clinics get their own with add-principal clinic-<MA_CSKCB>.
roles="admin worker query key-registry insurance-registry analytics operator identity-platform"
kafka_port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-9093}"
brokers="${HEALTHBOOK_BROKERS:-1}"
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

# ------------------------------------------------------------ secrets
password_of() {
  local file="$credentials/$1"
  if [ ! -s "$file" ]; then
    mkdir -p "$credentials"; chmod 700 "$secrets" "$credentials"
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$file")
  fi
  cat "$file"
}

# The broker certificate names every address a client dials: loopback here, the nodes in docker-compose.yml.
broker_names="subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kafka-1,DNS:kafka-2,DNS:kafka-3"

tls_material() {
  if [ -s "$tls/broker.p12" ] && [ "$(cat "$tls/broker.ext" 2>/dev/null)" = "$broker_names" ]; then return; fi
  need openssl "openssl is missing: install it (Debian: apt-get install openssl) to make the broker's TLS certificate."
  mkdir -p "$tls"; chmod 700 "$secrets" "$tls"
  (umask 077
   if [ ! -s "$tls/ca.key" ]; then
     say "making the local transport CA in $tls"
     openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=healthbook local Kafka CA" \
       -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
   fi
   say "making the brokers' TLS certificate ($broker_names)"
   openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
   printf '%s\n' "$broker_names" >"$tls/broker.ext"
   openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 3650 \
     -extfile "$tls/broker.ext" -out "$tls/broker.crt" 2>/dev/null
   [ -s "$tls/keystore.password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$tls/keystore.password"
   openssl pkcs12 -export -in "$tls/broker.crt" -inkey "$tls/broker.key" -name broker \
     -passout "file:$tls/keystore.password" -out "$tls/broker.p12")
  chmod 644 "$tls/ca.crt"
}

# ---------------------------------------------------------------- Kafka
# One node (HEALTHBOOK_BROKERS=1, the default) keeps its files straight under stack/.kafka; the
# three-node cluster (HEALTHBOOK_BROKERS=3) keeps one folder per node under stack/.kafka/cluster.
# Node N listens on KAFKA_PORT + 100*(N-1) and its controller on KAFKA_CONTROLLER_PORT + 100*(N-1).
cluster_home="${KAFKA_CLUSTER_HOME:-$kafka_home/cluster}"

node_dir() {  # node_dir MODE N
  if [ "$1" = 1 ]; then printf '%s' "$kafka_home"; else printf '%s' "$cluster_home/node-$2"; fi
}
node_port() { printf '%s' $((kafka_port + 100 * ($1 - 1))); }
node_controller_port() { printf '%s' $((controller_port + 100 * ($1 - 1))); }
node_pid_file() { printf '%s/kafka.pid' "$(node_dir "$1" "$2")"; }
nodes_of() { seq 1 "$1"; }

check_brokers() {
  [[ "$brokers" =~ ^(1|3)$ ]] || die "HEALTHBOOK_BROKERS is '$brokers': it takes 1 (one node, the default) or 3 (a three-node cluster)"
}

kafka_fetch() {
  if compgen -G "$kafka_lib/kafka_2.13-*.jar" >/dev/null; then return; fi
  need java "java is missing: install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)."
  need mvn "mvn is missing: install Apache Maven (Debian: apt-get install maven) so the Kafka broker can be resolved from Maven Central."
  say "resolving the Kafka broker from Maven Central into $kafka_lib"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$kafka_lib" -DincludeScope=runtime
}

kafka_configure() {  # kafka_configure MODE N
  local mode="$1" n="$2" dir replicas min_isr voters="" v
  dir="$(node_dir "$mode" "$n")"
  mkdir -p "$dir/config" "$dir/data" "$dir/logs"
  tls_material
  local admin_password keystore_password
  admin_password="$(password_of admin)"
  keystore_password="$(cat "$tls/keystore.password")"
  # Three nodes: every partition on all three, a write acknowledged by two, never a stale leader.
  if [ "$mode" = 3 ]; then replicas=3; min_isr=2; else replicas=1; min_isr=1; fi
  for v in $(nodes_of "$mode"); do voters="$voters${voters:+,}$v@127.0.0.1:$(node_controller_port "$v")"; done
  (umask 077; : >"$dir/config/server.properties")
  cat >"$dir/config/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=SASL_SSL://127.0.0.1:$(node_port "$n"),CONTROLLER://127.0.0.1:$(node_controller_port "$n")
advertised.listeners=SASL_SSL://127.0.0.1:$(node_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_password";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_password" user_admin="$admin_password";
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$keystore_password
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.crt
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=$dir/data
num.partitions=4
auto.create.topics.enable=false
default.replication.factor=$replicas
min.insync.replicas=$min_isr
unclean.leader.election.enable=false
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
  cat >"$dir/config/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/logs/server.log
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

kafka_java() {  # a Kafka tool, logging as node 1 of the running mode does
  java -Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$(node_dir "$brokers" 1)/config/log4j2.properties" \
    -cp "$kafka_lib/*" "$@"
}

node_running() {  # node_running MODE N
  local pid_file; pid_file="$(node_pid_file "$1" "$2")"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

kafka_running() {
  local n
  for n in $(nodes_of "$brokers"); do node_running "$brokers" "$n" || return 1; done
}

cluster_id() {  # one id for every node of a mode, made once
  local file="$cluster_home/cluster.id"
  [ "$1" = 1 ] && file="$kafka_home/cluster.id"
  mkdir -p "$(dirname "$file")"
  [ -s "$file" ] || kafka_java kafka.tools.StorageTool random-uuid >"$file"
  cat "$file"
}

node_format() {  # node_format MODE N: format the node's storage once, with a SCRAM principal per role
  local mode="$1" n="$2" dir; dir="$(node_dir "$mode" "$n")"
  if [ -f "$dir/data/meta.properties" ] && [ ! -f "$dir/data/.healthbook-secured" ]; then
    say "the Kafka storage in $dir/data predates SASL/TLS and has no principals; discarding it (local data only)"
    rm -rf "$dir/data"; mkdir -p "$dir/data"
  fi
  [ -f "$dir/data/meta.properties" ] && return
  say "formatting Kafka storage of node $n in $dir/data (once), with a SCRAM principal per role and clinic"
  # The passwords go to the tool in a Java argument file (owner-only), never on a command line ps shows.
  local argfile="$dir/config/format.args" role principals
  # every principal this machine holds a password for: the roles, and clinics added before on another node count
  principals="$(printf '%s\n' $roles; [ -d "$credentials" ] && ls "$credentials")"
  (umask 077
   printf '%s\n' kafka.tools.StorageTool format -t "$(cluster_id "$mode")" -c "$dir/config/server.properties" >"$argfile"
   for role in $(printf '%s\n' $principals | sort -u); do
     printf -- '--add-scram\n"SCRAM-SHA-512=[name=%s,password=%s]"\n' "$role" "$(password_of "$role")" >>"$argfile"
   done)
  kafka_java "@$argfile" >"$dir/logs/format.log" 2>&1 \
    || { rm -f "$argfile"; die "formatting Kafka storage of node $n failed; see $dir/logs/format.log"; }
  rm -f "$argfile"
  touch "$dir/data/.healthbook-secured"
}

node_start() {  # node_start MODE N: start the node's JVM unless it runs
  local mode="$1" n="$2" dir port heap=1g; dir="$(node_dir "$mode" "$n")"; port="$(node_port "$n")"
  [ "$mode" = 3 ] && heap=768m
  if node_running "$mode" "$n"; then return; fi
  if port_open "$port"; then die "port $port is taken by another program: stop it or set KAFKA_PORT."; fi
  say "starting Kafka node $n on 127.0.0.1:$port"
  nohup java -Xms256m "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/config/log4j2.properties" -cp "$kafka_lib/*" \
    kafka.Kafka "$dir/config/server.properties" >"$dir/logs/stdout.log" 2>&1 &
  echo $! >"$(node_pid_file "$mode" "$n")"
}

node_wait() {  # node_wait MODE N: until the node's client port answers
  local mode="$1" n="$2" port dir; port="$(node_port "$n")"; dir="$(node_dir "$mode" "$n")"
  for _ in $(seq 1 120); do
    port_open "$port" && return
    node_running "$mode" "$n" || die "Kafka node $n exited during start-up; see $dir/logs/stdout.log and $dir/logs/server.log"
    sleep 0.5
  done
  die "Kafka node $n did not open 127.0.0.1:$port within 60 s; see $dir/logs/server.log"
}

node_stop() {  # node_stop MODE N [SIGNAL]: TERM and wait (KILL after 30 s), or send SIGNAL and forget the pid
  local mode="$1" n="$2" signal="${3:-TERM}" pid_file pid
  pid_file="$(node_pid_file "$mode" "$n")"
  if node_running "$mode" "$n"; then
    pid="$(cat "$pid_file")"
    say "stopping Kafka node $n (pid $pid, SIG$signal)"
    kill "-$signal" "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

kafka_up() {
  check_brokers
  kafka_fetch
  local other n
  other=$([ "$brokers" = 1 ] && echo 3 || echo 1)
  for n in $(nodes_of "$other"); do  # one mode at a time: both use KAFKA_PORT
    node_running "$other" "$n" && { say "the other local Kafka ($other node(s)) is running: stopping it first"; node_stop "$other" "$n"; }
  done
  for n in $(nodes_of "$brokers"); do kafka_configure "$brokers" "$n"; done
  for n in $(nodes_of "$brokers"); do node_format "$brokers" "$n"; done
  if kafka_running; then say "Kafka already running ($brokers node(s)) from 127.0.0.1:$kafka_port"; return; fi
  for n in $(nodes_of "$brokers"); do node_start "$brokers" "$n"; done
  for n in $(nodes_of "$brokers"); do node_wait "$brokers" "$n"; done
  say "Kafka is up ($brokers node(s)): $(bootstrap)"
}

kafka_down() {
  local mode n
  for mode in 1 3; do for n in $(nodes_of "$mode"); do node_stop "$mode" "$n"; done; done
}

bootstrap() {
  local n list=""
  for n in $(nodes_of "$brokers"); do list="$list${list:+,}127.0.0.1:$(node_port "$n")"; done
  printf '%s' "$list"
}

node_command() {  # node_command ACTION N: one cluster node, for the fault suite and the nemesis
  local action="$1" n="${2:-}"
  [[ "$n" =~ ^[1-9]$ ]] && [ "$n" -le "$brokers" ] || die "usage: stack/stack.sh node-$action N (1 to $brokers)"
  case "$action" in
    up) kafka_configure "$brokers" "$n"; node_start "$brokers" "$n"; node_wait "$brokers" "$n" ;;
    down) node_stop "$brokers" "$n" ;;
    kill) node_stop "$brokers" "$n" KILL ;;
    pid) node_running "$brokers" "$n" && cat "$(node_pid_file "$brokers" "$n")" ;;
  esac
}


# ----------------------------------------------------------- headless Chromium for the page tests
browser_install() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return; fi
  need apt-get "apt-get is missing: install Chromium and its ChromeDriver (Debian: chromium, chromium-driver) yourself."
  say "installing Chromium and ChromeDriver from Debian's packages (the citizen page's browser test)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
}

compiler_install() {  # a C compiler and Python's headers: pip builds schemas/_native.c with them
  local headers
  headers="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
  if command -v cc >/dev/null 2>&1 && [ -f "$headers" ]; then return; fi
  need apt-get "apt-get is missing: install a C compiler and Python 3.11's headers yourself (Debian: gcc python3-dev)."
  say "installing a C compiler and Python's headers from Debian's packages (schemas/_native.c)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq gcc libc6-dev python3-dev >/dev/null
}

# ------------------------------------------------- Prometheus and Alertmanager
observe_dir="$(cd "$here/.." && pwd)/.local/observe"
ops="$(cd "$here/.." && pwd)/ops"
prometheus_port="${PROMETHEUS_PORT:-9090}"
alertmanager_port="${ALERTMANAGER_PORT:-9095}"  # 9093 is Kafka's controller

observe_install() {  # promtool for `make test`, and the servers `make observe` starts
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
     && command -v prometheus-alertmanager >/dev/null 2>&1; then return; fi
  need apt-get "apt-get is missing: install Prometheus 2.x (prometheus, promtool) and Alertmanager yourself."
  say "installing Prometheus and Alertmanager from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null
}

observe_running() {  # observe_running NAME: its pid file names a live process
  [ -f "$observe_dir/$1.pid" ] && kill -0 "$(cat "$observe_dir/$1.pid")" 2>/dev/null
}

observe_up() {
  observe_install
  mkdir -p "$observe_dir/prometheus" "$observe_dir/alertmanager"
  if ! observe_running alertmanager; then
    prometheus-alertmanager --config.file="$ops/alertmanager/alertmanager.yml" \
      --storage.path="$observe_dir/alertmanager" --web.listen-address="127.0.0.1:$alertmanager_port" \
      --cluster.listen-address= >"$observe_dir/alertmanager.log" 2>&1 &
    echo $! >"$observe_dir/alertmanager.pid"
  fi
  if ! observe_running prometheus; then
    prometheus --config.file="$ops/prometheus/prometheus.yml" --storage.tsdb.path="$observe_dir/prometheus" \
      --web.listen-address="127.0.0.1:$prometheus_port" >"$observe_dir/prometheus.log" 2>&1 &
    echo $! >"$observe_dir/prometheus.pid"
  fi
  local tries=0
  until port_open "$prometheus_port" && port_open "$alertmanager_port"; do
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || die "Prometheus or Alertmanager did not start: see $observe_dir/*.log"
    sleep 0.5
  done
  say "Prometheus on http://127.0.0.1:$prometheus_port/alerts (healthbook's rules), Alertmanager on http://127.0.0.1:$alertmanager_port"
}

observe_down() {
  local name
  for name in prometheus alertmanager; do
    if observe_running "$name"; then
      say "stopping $name"
      kill "$(cat "$observe_dir/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$observe_dir/$name.pid"
  done
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
    # on standard input, not -c: a command line is readable by every local user in ps
    "${psql[@]}" <<<"create role $pg_user login createdb password '${pg_password//\'/\'\'}'"
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
  printf '%-11s %-22s %-10s %s\n' service listens status data
  local n k
  for n in $(nodes_of "$brokers"); do
    if node_running "$brokers" "$n" && port_open "$(node_port "$n")"; then
      k="healthy (pid $(cat "$(node_pid_file "$brokers" "$n")"))"; else k="down"; fi
    printf '%-11s %-22s %-10s %s\n' "kafka-$n" "127.0.0.1:$(node_port "$n")" "$k" "$(node_dir "$brokers" "$n")/data"
  done
  for n in prometheus alertmanager; do
    if observe_running "$n"; then
      k="$([ "$n" = prometheus ] && echo "$prometheus_port" || echo "$alertmanager_port")"
      printf '%-11s %-22s %-10s %s\n' "$n" "127.0.0.1:$k" "healthy (pid $(cat "$observe_dir/$n.pid"))" "$observe_dir/$n"
    fi
  done
  if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_cluster)" ]; then
    read -r version name port pstatus <<<"$(pg_cluster)"
    pdata="$(pg_lsclusters -h | awk 'NR==1 {print $6}')"
    if [ "$pstatus" = online ] && port_open "$port"; then p=healthy; else p=down; fi
    printf '%-11s %-22s %-10s %s\n' postgresql "127.0.0.1:$port" "$p" "$pdata ($version/$name)"
  else
    printf '%-11s %-22s %-10s %s\n' postgresql - "not installed" -
  fi
}

admin_config() {
  local file="$(node_dir "$brokers" 1)/config/admin.properties"
  (umask 077; cat >"$file" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(password_of admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.crt
PROPS
  )
  printf '%s' "$file"
}

add_principal() {
  local name="${1:-}"
  [[ "$name" =~ ^[a-z0-9][a-z0-9.-]{0,63}$ ]] || die "usage: stack/stack.sh add-principal NAME (lower-case letters, digits, . and -)"
  kafka_running || die "Kafka is not running; start it with 'make up'"
  local conf; conf="$(node_dir "$brokers" 1)/config"
  local argfile="$conf/add-principal.args"  # the password in a Java argument file, never on a command line
  (umask 077
   printf '%s\n' kafka.admin.ConfigCommand --bootstrap-server "$(bootstrap)" \
     --command-config "$(admin_config)" --alter --entity-type users --entity-name "$name" --add-config >"$argfile"
   printf '"SCRAM-SHA-512=[password=%s]"\n' "$(password_of "$name")" >>"$argfile")
  kafka_java "@$argfile" >"$conf/../logs/add-principal.log" 2>&1 \
    || { rm -f "$argfile"; die "adding principal $name failed; see $conf/../logs/add-principal.log"; }
  rm -f "$argfile"
  say "principal $name can log in; its password is in $credentials/$name (give it only to $name)"
}

secrets() {
  tls_material
  local role
  for role in $roles; do password_of "$role" >/dev/null; done
  say "TLS material in $tls and one password per role in $credentials (owner-only; give each only to its role)"
}

case "${1:-}" in
  up) pg_up; kafka_up ;;
  browser) browser_install ;;
  compiler) compiler_install ;;
  secrets) secrets ;;
  add-principal) add_principal "${2:-}" ;;
  down) observe_down; kafka_down; pg_down ;;
  observe) observe_up ;;
  observe-install) observe_install ;;
  observe-down) observe_down ;;
  status) status ;;
  kafka-up) kafka_up ;;
  node-up|node-down|node-kill|node-pid) node_command "${1#node-}" "${2:-}" ;;
  bootstrap) bootstrap ;;
  kafka-down) kafka_down ;;
  pg-up) pg_up ;;
  pg-down) pg_down ;;
  *) echo "usage: stack/stack.sh up|down|status|secrets|add-principal NAME|kafka-up|kafka-down|node-up|node-down|node-kill|node-pid N|bootstrap|pg-up|pg-down|browser" >&2
     exit 2 ;;
esac
