package vn.healthbook.publisher;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/** The byte rules of docs/contract.md: Confluent framing and the length-prefixed, presence-marked signing inputs. */
final class Contract {
    static final int SIGNED_VISIT_ID = 2;
    static final int VISIT_EVENT_ID = 7;
    static final int INTEGRATION_REQUEST_ID = 19;
    static final String VISIT_CONTEXT = "healthbook/signed-visit/v1";
    static final String REQUEST_CONTEXT = "healthbook/integration-request/v2";
    /** Key, headers and record-batch framing the topics allow around the largest visit (section 7). */
    static final int RECORD_OVERHEAD = 64 * 1024;
    static final int DEFAULT_MAX_VISIT_BYTES = 4 * 1024 * 1024;

    private Contract() {
    }

    /** Byte 0, the 4-byte big-endian schema id, then the Avro binary record (section 4). */
    static byte[] frame(int schemaId, byte[] avro) {
        return ByteBuffer.allocate(5 + avro.length).put((byte) 0).putInt(schemaId).put(avro).array();
    }

    /** A signing input: the context label, then each field as a 4-byte big-endian length and its bytes (section 6). */
    static final class SigningInput {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        SigningInput(String context) {
            out.writeBytes(context.getBytes(StandardCharsets.US_ASCII));
        }

        SigningInput text(String value) {
            return bytes(value.getBytes(StandardCharsets.UTF_8));
        }

        SigningInput integer(long value) {
            return bytes(ByteBuffer.allocate(8).putLong(value).array());
        }

        /** An optional field or group: the presence byte 00 when absent (nothing follows), 01 when present. */
        SigningInput presence(boolean present) {
            out.write(present ? 1 : 0);
            return this;
        }

        SigningInput bytes(byte[] value) {
            out.writeBytes(ByteBuffer.allocate(4).putInt(value.length).array());
            out.writeBytes(value);
            return this;
        }

        byte[] toBytes() {
            return out.toByteArray();
        }
    }
}
