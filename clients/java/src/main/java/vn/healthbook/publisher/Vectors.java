package vn.healthbook.publisher;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.avro.generic.GenericData;

/** Recomputes the output test vectors of docs/contract.md from its inputs, independently of the Python code. */
final class Vectors {
    private static final Pattern BLOCK = Pattern.compile("<!-- vector ([\\w.]+) -->\\n```(\\w+)\\n(.*?)```", Pattern.DOTALL);
    private static final HexFormat HEX = HexFormat.of();

    private Vectors() {
    }

    static Map<String, String> blocks(Path contract) throws IOException {
        Map<String, String> found = new LinkedHashMap<>();
        Matcher matcher = BLOCK.matcher(Files.readString(contract, StandardCharsets.UTF_8));
        while (matcher.find()) {
            found.put(matcher.group(1), matcher.group(3));
        }
        return found;
    }

    /** Every output vector, by name, as lowercase hex. */
    static Map<String, String> compute(Path contract) throws IOException, GeneralSecurityException {
        Map<String, String> in = blocks(contract);
        ObjectMapper json = new ObjectMapper();
        KeyPair keys = Ed25519Keys.fromSeed(HEX.parseHex(in.get("key.seed").replaceAll("\\s", "")));
        JsonNode fields = json.readTree(in.get("visit.envelope"));
        VisitSealer sealer = new VisitSealer(fields.get("clinic_code").textValue(), fields.get("key_id").textValue(),
                keys.getPrivate());
        VisitSealer.Sealed sealed = sealer.seal(json.readTree(in.get("visit.event")), fields.get("signed_at").longValue());
        Map<String, String> out = new LinkedHashMap<>();
        out.put("key.public", HEX.formatHex(Ed25519Keys.raw(keys.getPublic())));
        out.put("visit.key", HEX.formatHex(sealed.key()));
        out.put("visit.payload", HEX.formatHex(sealed.payload()));
        out.put("visit.signing_input", HEX.formatHex(sealed.signingInput()));
        out.put("visit.signature", HEX.formatHex(sealed.signature()));
        out.put("visit.message", HEX.formatHex(sealed.value()));
        for (String name : new String[] {"request", "request_detail", "request_fhir"}) {
            JsonNode request = json.readTree(in.get(name + ".fields"));
            Contract.SigningInput input = new Contract.SigningInput(Contract.REQUEST_CONTEXT)
                    .text(request.get("request_id").textValue())
                    .text(request.get("personal_id").textValue())
                    .integer(request.get("year").longValue())
                    .integer(request.get("identity_level").longValue())
                    .integer(request.get("consent_confirmed").booleanValue() ? 1 : 0)
                    .integer(request.get("requested_at").longValue())
                    .text(request.get("key_id").textValue());
            JsonNode detail = request.path("detail");
            input.presence(detail.isObject());
            if (detail.isObject()) {
                input.text(detail.get("facility_code").textValue()).text(detail.get("visit_code").textValue());
            }
            boolean everyYear = request.path("every_year").asBoolean(false);
            input.text(request.path("format").asText("book")).integer(everyYear ? 1 : 0);
            byte[] signingInput = input.toBytes();
            byte[] signature = Ed25519Keys.sign(keys.getPrivate(), signingInput);
            GenericData.Record record = (GenericData.Record) AvroJson.datum(
                    Schemas.INTEGRATION_REQUEST, withoutSignature(request), "");
            record.put("signature", ByteBuffer.wrap(signature));
            byte[] message = Contract.frame(Contract.INTEGRATION_REQUEST_ID,
                    AvroJson.encode(Schemas.INTEGRATION_REQUEST, record));
            out.put(name + ".signing_input", HEX.formatHex(signingInput));
            out.put(name + ".signature", HEX.formatHex(signature));
            out.put(name + ".message", HEX.formatHex(message));
        }
        return out;
    }

    /** The request's JSON with an empty signature, replaced once signed. */
    private static JsonNode withoutSignature(JsonNode request) {
        com.fasterxml.jackson.databind.node.ObjectNode copy = request.deepCopy();
        copy.put("signature", "");
        return copy;
    }
}
