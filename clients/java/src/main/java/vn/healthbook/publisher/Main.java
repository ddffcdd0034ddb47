package vn.healthbook.publisher;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The healthbook reference publisher: signs a clinic's visit events and publishes them to `visits`.
 *
 * <pre>
 * publish --bootstrap HOST:PORT --topic visits --clinic C --key-id K --private-key K.pem
 *         --user clinic-C --password-file F --ca-file ca.crt [--max-visit-bytes N] VISITS.jsonl
 * sign    --clinic C --key-id K --private-key K.pem [--signed-at MILLIS] VISITS.jsonl   (prints key and value hex)
 * vectors docs/contract.md                                                          (prints each output vector)
 * verify  --ca CA.crt BUNDLE.json        (checks every visit of an exported FHIR Bundle; exit 1 if one fails)
 * </pre>
 */
public final class Main {
    private static final HexFormat HEX = HexFormat.of();

    private Main() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            usage("give a command and its arguments");
        }
        Map<String, String> options = new HashMap<>();
        List<String> files = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            if (args[i].startsWith("--")) {
                if (i + 1 >= args.length) {
                    usage(args[i] + " needs a value");
                }
                options.put(args[i].substring(2), args[++i]);
            } else {
                files.add(args[i]);
            }
        }
        if (files.size() != 1) {
            usage("give exactly one file");
        }
        Path file = Path.of(files.get(0));
        switch (args[0]) {
            case "vectors" -> Vectors.compute(file).forEach((name, hex) -> System.out.println(name + " " + hex));
            case "sign" -> sign(options, file);
            case "publish" -> System.exit(publish(options, file));
            case "verify" -> System.exit(verify(options, file));
            default -> usage("unknown command " + args[0]);
        }
    }

    private static VisitSealer sealer(Map<String, String> options) throws IOException, GeneralSecurityException {
        return new VisitSealer(required(options, "clinic"), required(options, "key-id"),
                Ed25519Keys.fromPem(Path.of(required(options, "private-key"))));
    }

    private static void sign(Map<String, String> options, Path file) throws Exception {
        VisitSealer sealer = sealer(options);
        long signedAt = Long.parseLong(options.getOrDefault("signed-at", String.valueOf(System.currentTimeMillis())));
        for (JsonNode event : events(file)) {
            VisitSealer.Sealed sealed = sealer.seal(event, signedAt);
            System.out.println(HEX.formatHex(sealed.key()) + " " + HEX.formatHex(sealed.value()));
        }
    }

    /** Publish every visit of a JSON-lines file; a line that cannot be sent is reported and the next one goes on. */
    private static int publish(Map<String, String> options, Path file) throws Exception {
        VisitSealer sealer = sealer(options);
        String clinic = required(options, "clinic");
        String topic = options.getOrDefault("topic", "visits");
        int maxVisitBytes = Integer.parseInt(options.getOrDefault("max-visit-bytes",
                String.valueOf(Contract.DEFAULT_MAX_VISIT_BYTES)));
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        int refused = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerConfig(options, maxVisitBytes));
             BufferedReader lines = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            ObjectMapper json = new ObjectMapper();
            String line;
            int number = 0;
            while ((line = lines.readLine()) != null) {
                number++;
                if (line.isBlank()) {
                    continue;
                }
                try {
                    VisitSealer.Sealed sealed = sealer.seal(json.readTree(line), System.currentTimeMillis());
                    if (sealed.value().length > maxVisitBytes) {
                        throw new AvroJson.Mismatch("visit " + sealed.visitCode(), String.format(
                                "the signed visit is %,d bytes, larger than the %,d bytes the visits topic accepts "
                                        + "(HEALTHBOOK_MAX_VISIT_BYTES) [visit_too_large]",
                                sealed.value().length, maxVisitBytes));
                    }
                    sent.add(producer.send(new ProducerRecord<>(topic, sealed.key(), sealed.value())));
                } catch (IOException | AvroJson.Mismatch | NumberFormatException e) {
                    refused++;
                    System.err.println("line " + number + ": not published: " + e.getMessage());
                }
            }
            producer.flush();
            for (Future<RecordMetadata> future : sent) {
                try {
                    future.get();
                } catch (ExecutionException e) {
                    throw new IllegalStateException("the broker did not take a visit: " + e.getCause(), e.getCause());
                }
            }
        }
        System.out.printf("published %d visit(s) for clinic %s; %d refused before sending%n", sent.size(), clinic,
                refused);
        return refused == 0 ? 0 : 1;
    }

    /** Check every visit of an exported FHIR Bundle against the CA certificate; one line per visit. */
    private static int verify(Map<String, String> options, Path file) throws Exception {
        BundleVerifier verifier = new BundleVerifier(BundleVerifier.certificate(
                Files.readAllBytes(Path.of(required(options, "ca")))));
        List<BundleVerifier.Verdict> verdicts = verifier.verify(new ObjectMapper().readTree(file.toFile()));
        verdicts.forEach(verdict -> System.out.println(verdict.line()));
        return verdicts.stream().anyMatch(v -> v.status() == BundleVerifier.Status.FAILED) ? 1 : 0;
    }

    /** An idempotent, acks=all producer logging in as the clinic's own principal over TLS (contract section 2). */
    static Properties producerConfig(Map<String, String> options, int maxVisitBytes) throws IOException {
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, options.getOrDefault("bootstrap", "127.0.0.1:9092"));
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        config.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, String.valueOf(maxVisitBytes + Contract.RECORD_OVERHEAD));
        config.put(ProducerConfig.CLIENT_ID_CONFIG, "healthbook-java-clinic-" + required(options, "clinic"));
        config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        String protocol = options.getOrDefault("security-protocol", "SASL_SSL");
        config.put("security.protocol", protocol);
        if (!protocol.equals("PLAINTEXT")) {
            String password = Files.readString(Path.of(required(options, "password-file"))).strip();
            config.put("sasl.mechanism", "SCRAM-SHA-512");
            config.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    + "username=\"" + required(options, "user") + "\" password=\"" + password + "\";");
            config.put("ssl.truststore.type", "PEM");
            config.put("ssl.truststore.location", required(options, "ca-file"));
        }
        return config;
    }

    private static List<JsonNode> events(Path file) throws IOException {
        ObjectMapper json = new ObjectMapper();
        List<JsonNode> events = new ArrayList<>();
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            if (!line.isBlank()) {
                events.add(json.readTree(line));
            }
        }
        return events;
    }

    private static String required(Map<String, String> options, String name) {
        String value = options.get(name);
        if (value == null) {
            usage("--" + name + " is required");
        }
        return value;
    }

    private static void usage(String problem) {
        System.err.println("healthbook-publisher: " + problem + "\n"
                + "  publish --bootstrap H:P --topic visits --clinic C --key-id K --private-key K.pem --user clinic-C\n"
                + "          --password-file F --ca-file ca.crt [--max-visit-bytes N] VISITS.jsonl\n"
                + "  sign    --clinic C --key-id K --private-key K.pem [--signed-at MILLIS] VISITS.jsonl\n"
                + "  vectors docs/contract.md\n"
                + "  verify  --ca CA.crt BUNDLE.json");
        System.exit(2);
    }
}
