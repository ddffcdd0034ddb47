#!/bin/sh
# The Kafka broker of docker-compose.yml, secured like stack/stack.sh: SASL_SSL with SCRAM-SHA-512,
# TLS from the transport CA in /secrets/tls, ACLs by StandardAuthorizer, one principal per role
# (each with a password file in /secrets/credentials, made by `bash stack/stack.sh secrets`).
# HEALTHBOOK_NODE_ID (1-3) says which of the three nodes this is; every node is a controller voter.
set -eu
node="${HEALTHBOOK_NODE_ID:?set HEALTHBOOK_NODE_ID to 1, 2 or 3}"
conf=/tmp/server.properties
admin_password="$(cat /secrets/credentials/admin)"
cat >"$conf" <<PROPS
process.roles=broker,controller
node.id=$node
controller.quorum.voters=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093
listeners=SASL_SSL://:9092,CONTROLLER://:9093
advertised.listeners=SASL_SSL://kafka-$node:9092
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
ssl.keystore.location=/secrets/tls/broker.p12
ssl.keystore.password=$(cat /secrets/tls/keystore.password)
ssl.truststore.type=PEM
ssl.truststore.location=/secrets/tls/ca.crt
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=/var/lib/kafka/data
num.partitions=4
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  set --
  for file in /secrets/credentials/*; do
    set -- "$@" --add-scram "SCRAM-SHA-512=[name=$(basename "$file"),password=$(cat "$file")]"
  done
  # the three nodes format with one cluster id (a 16-byte id in base64url: "healthbook-local")
  /opt/kafka/bin/kafka-storage.sh format -t "${KAFKA_CLUSTER_ID:-aGVhbHRoYm9vay1sb2NhbA}" -c "$conf" "$@"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$conf"
