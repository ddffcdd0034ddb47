#!/usr/bin/env bash
# The local healthbook stack without Docker: Apache Kafka (KRaft, single node) from
# Maven Central and PostgreSQL from Debian's packages, both on 127.0.0.1.
#   stack/stack.sh up | down | status | secrets | add-principal NAME
# Kafka listens SASL_SSL only: TLS with a certificate from a local transport CA, SCRAM-SHA-512
# logins, and ACLs by KRaft's StandardAuthorizer (nothing is allowed without an ACL). The CA,
# the broker's key and one password per role principal are made at the first `up` under
# .local/kafka/ (owner-only, never committed); ACLs are granted by `healthbook topics`.
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
secrets="$(cd "$here/.." && pwd)/.local/kafka"
tls="$secrets/tls"
credentials="$secrets/credentials"
# One SCRAM principal per role; clinics get their own with add-principal clinic-<MA_CSKCB>.
roles="admin worker query key-registry insurance-registry analytics operator identity-platform"
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

# ------------------------------------------------------------ secrets
password_of() {
  local file="$credentials/$1"
  if [ ! -s "$file" ]; then
    mkdir -p "$credentials"; chmod 700 "$secrets" "$credentials"
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$file")
  fi
  cat "$file"
}

tls_material() {
  [ -s "$tls/broker.p12" ] && return
  need openssl "openssl is missing: install it (Debian: apt-get install openssl) to make the broker's TLS certificate."
  say "making the local transport CA and the broker's TLS certificate in $tls"
  mkdir -p "$tls"; chmod 700 "$secrets" "$tls"
  (umask 077
   openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=healthbook local Kafka CA" \
     -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
   openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
   printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/broker.ext"
   openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 3650 \
     -extfile "$tls/broker.ext" -out "$tls/broker.crt" 2>/dev/null
   head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$tls/keystore.password"
   openssl pkcs12 -export -in "$tls/broker.crt" -inkey "$tls/broker.key" -name broker \
     -passout "file:$tls/keystore.password" -out "$tls/broker.p12")
  chmod 644 "$tls/ca.crt"
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
  tls_material
  local admin_password keystore_password
  admin_password="$(password_of admin)"
  keystore_password="$(cat "$tls/keystore.password")"
  (umask 077; : >"$kafka_conf/server.properties")
  cat >"$kafka_conf/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=SASL_SSL://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$kafka_port
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
  if [ -f "$kafka_data/meta.properties" ] && [ ! -f "$kafka_data/.healthbook-secured" ]; then
    say "the Kafka storage in $kafka_data predates SASL/TLS and has no principals; discarding it (local data only)"
    rm -rf "$kafka_data"; mkdir -p "$kafka_data"
  fi
  if [ ! -f "$kafka_data/meta.properties" ]; then
    say "formatting Kafka storage in $kafka_data (once), with a SCRAM principal per role"
    # The passwords go to the tool in a Java argument file (owner-only), never on a command line ps shows.
    local argfile="$kafka_conf/format.args" role
    (umask 077
     printf '%s\n' kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
       -c "$kafka_conf/server.properties" >"$argfile"
     for role in $roles; do
       printf -- '--add-scram\n"SCRAM-SHA-512=[name=%s,password=%s]"\n' "$role" "$(password_of "$role")" >>"$argfile"
     done)
    kafka_java "@$argfile" >"$kafka_logs/format.log" 2>&1 \
      || { rm -f "$argfile"; die "formatting Kafka storage failed; see $kafka_logs/format.log"; }
    rm -f "$argfile"
    touch "$kafka_data/.healthbook-secured"
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

# ----------------------------------------------------------- headless Chromium for the page tests
browser_install() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return; fi
  need apt-get "apt-get is missing: install Chromium and its ChromeDriver (Debian: chromium, chromium-driver) yourself."
  say "installing Chromium and ChromeDriver from Debian's packages (the citizen page's browser test)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
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

admin_config() {
  local file="$kafka_conf/admin.properties"
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
  local argfile="$kafka_conf/add-principal.args"  # the password in a Java argument file, never on a command line
  (umask 077
   printf '%s\n' kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$kafka_port" \
     --command-config "$(admin_config)" --alter --entity-type users --entity-name "$name" --add-config >"$argfile"
   printf '"SCRAM-SHA-512=[password=%s]"\n' "$(password_of "$name")" >>"$argfile")
  kafka_java "@$argfile" >"$kafka_logs/add-principal.log" 2>&1 \
    || { rm -f "$argfile"; die "adding principal $name failed; see $kafka_logs/add-principal.log"; }
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
  secrets) secrets ;;
  add-principal) add_principal "${2:-}" ;;
  down) kafka_down; pg_down ;;
  status) status ;;
  kafka-up) kafka_up ;;
  kafka-down) kafka_down ;;
  pg-up) pg_up ;;
  pg-down) pg_down ;;
  *) echo "usage: stack/stack.sh up|down|status|secrets|add-principal NAME|kafka-up|kafka-down|pg-up|pg-down|browser" >&2
     exit 2 ;;
esac
