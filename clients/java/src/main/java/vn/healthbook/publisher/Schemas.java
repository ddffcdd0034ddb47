package vn.healthbook.publisher;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import org.apache.avro.Schema;

/** The project's own .avsc files, packaged from schemas/avro at build time. */
final class Schemas {
    static final Schema VISIT_EVENT = load("visit_event_v2.avsc");
    static final Schema SIGNED_VISIT = load("signed_visit.avsc");
    static final Schema INTEGRATION_REQUEST = load("integration_request_v4.avsc");

    private Schemas() {
    }

    private static Schema load(String file) {
        try (InputStream in = Schemas.class.getResourceAsStream("/avro/" + file)) {
            if (in == null) {
                throw new IllegalStateException("schema " + file + " is not on the classpath; build with mvn package");
            }
            return new Schema.Parser().parse(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
