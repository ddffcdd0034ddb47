package vn.healthbook.publisher;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.avro.LogicalTypes;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;

/** Plain JSON (as `healthbook publish` takes it) to Avro binary, guided by the schema. */
final class AvroJson {
    private AvroJson() {
    }

    /** Thrown when a JSON value does not fit the schema; the message names the field. */
    static final class Mismatch extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Mismatch(String path, String message) {
            super(path + ": " + message);
        }
    }

    /** The Avro binary encoding of one record. */
    static byte[] encode(Schema schema, Object datum) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        BinaryEncoder encoder = EncoderFactory.get().directBinaryEncoder(out, null);
        try {
            new GenericDatumWriter<Object>(schema).write(datum, encoder);
            encoder.flush();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }

    /** The Avro datum of a JSON value: absent fields take their defaults, decimals may be strings. */
    static Object datum(Schema schema, JsonNode json, String path) {
        switch (schema.getType()) {
            case RECORD:
                return record(schema, json, path);
            case UNION:
                return union(schema, json, path);
            case ARRAY: {
                require(json.isArray(), path, "an array is expected");
                List<Object> items = new ArrayList<>();
                int i = 0;
                for (JsonNode item : json) {
                    items.add(datum(schema.getElementType(), item, path + "." + i++));
                }
                return items;
            }
            case MAP: {
                require(json.isObject(), path, "an object is expected");
                Map<String, Object> values = new LinkedHashMap<>();  // Avro writes map entries in this order
                for (Map.Entry<String, JsonNode> entry : json.properties()) {
                    values.put(entry.getKey(), datum(schema.getValueType(), entry.getValue(), path + "." + entry.getKey()));
                }
                return values;
            }
            case STRING:
                require(json.isTextual(), path, "text is expected");
                return json.textValue();
            case INT:
                require(json.isIntegralNumber() && json.canConvertToInt() || isInteger(json), path, "an int is expected");
                return json.isTextual() ? Integer.parseInt(json.textValue()) : json.intValue();
            case LONG:
                require(json.isIntegralNumber() && json.canConvertToLong() || isInteger(json), path, "a long is expected");
                return json.isTextual() ? Long.parseLong(json.textValue()) : json.longValue();
            case DOUBLE:
                require(json.isNumber(), path, "a number is expected");
                return json.doubleValue();
            case BOOLEAN:
                require(json.isBoolean(), path, "true or false is expected");
                return json.booleanValue();
            case NULL:
                require(json.isNull(), path, "null is expected");
                return null;
            case BYTES:
                return bytes(schema, json, path);
            default:
                throw new Mismatch(path, "the reference publisher does not write Avro " + schema.getType());
        }
    }

    private static Object record(Schema schema, JsonNode json, String path) {
        require(json.isObject(), path, "an object is expected");
        GenericData.Record record = new GenericData.Record(schema);
        for (Schema.Field field : schema.getFields()) {
            JsonNode value = json.get(field.name());
            String at = path.isEmpty() ? field.name() : path + "." + field.name();
            if (value != null) {
                record.put(field.pos(), datum(field.schema(), value, at));
            } else if (field.hasDefaultValue()) {
                record.put(field.pos(), GenericData.get().getDefaultValue(field));
            } else {
                throw new Mismatch(at, "is required");
            }
        }
        for (Iterator<String> names = json.fieldNames(); names.hasNext(); ) {
            String name = names.next();
            require(schema.getField(name) != null, path.isEmpty() ? name : path + "." + name, "is not a field of " + schema.getName());
        }
        return record;
    }

    private static Object union(Schema schema, JsonNode json, String path) {
        if (json.isNull()) {
            require(schema.getTypes().stream().anyMatch(s -> s.getType() == Schema.Type.NULL), path, "may not be null");
            return null;
        }
        Mismatch last = new Mismatch(path, "matches no branch of the union");
        for (Schema branch : schema.getTypes()) {
            if (branch.getType() == Schema.Type.NULL) {
                continue;
            }
            try {
                return datum(branch, json, path);
            } catch (Mismatch mismatch) {
                last = mismatch;
            }
        }
        throw last;
    }

    private static Object bytes(Schema schema, JsonNode json, String path) {
        if (!(schema.getLogicalType() instanceof LogicalTypes.Decimal)) {
            require(json.isTextual(), path, "base64 text is expected");
            try {
                return ByteBuffer.wrap(java.util.Base64.getDecoder().decode(json.textValue()));
            } catch (IllegalArgumentException e) {
                throw new Mismatch(path, "is not base64");
            }
        }
        int scale = ((LogicalTypes.Decimal) schema.getLogicalType()).getScale();
        require(json.isNumber() || json.isTextual(), path, "an amount is expected");
        try {
            BigDecimal amount = new BigDecimal(json.asText()).setScale(scale, RoundingMode.UNNECESSARY);
            // two's-complement big-endian bytes of the unscaled value, in the fewest bytes (section 5)
            return ByteBuffer.wrap(amount.unscaledValue().toByteArray());
        } catch (ArithmeticException | NumberFormatException e) {
            throw new Mismatch(path, "'" + json.asText() + "' is not an amount with at most " + scale + " decimals");
        }
    }

    private static boolean isInteger(JsonNode json) {
        return json.isTextual() && json.textValue().matches("-?\\d{1,9}");
    }

    private static void require(boolean condition, String path, String message) {
        if (!condition) {
            throw new Mismatch(path, message);
        }
    }
}
