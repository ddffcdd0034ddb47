package vn.healthbook.publisher;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.PrivateKey;
import java.nio.ByteBuffer;
import org.apache.avro.generic.GenericData;

/** Turns one visit event (JSON) into the key and value of a `visits` message, signed by the clinic. */
final class VisitSealer {
    private final String clinicCode;
    private final String keyId;
    private final PrivateKey privateKey;

    VisitSealer(String clinicCode, String keyId, PrivateKey privateKey) {
        this.clinicCode = clinicCode;
        this.keyId = keyId;
        this.privateKey = privateKey;
    }

    /** One sealed visit and the intermediate bytes the contract's test vectors show. */
    record Sealed(String visitCode, byte[] key, byte[] payload, byte[] signingInput, byte[] signature, byte[] value) {
    }

    Sealed seal(JsonNode event, long signedAtMillis) throws GeneralSecurityException {
        GenericData.Record visit = (GenericData.Record) AvroJson.datum(Schemas.VISIT_EVENT, event, "");
        byte[] payload = Contract.frame(Contract.VISIT_EVENT_ID, AvroJson.encode(Schemas.VISIT_EVENT, visit));
        String eventId = visit.get("event_id").toString();
        long version = (Long) visit.get("version");
        byte[] signingInput = new Contract.SigningInput(Contract.VISIT_CONTEXT)
                .text(clinicCode).text(keyId).text(eventId).integer(version).integer(signedAtMillis).bytes(payload)
                .toBytes();
        byte[] signature = Ed25519Keys.sign(privateKey, signingInput);
        GenericData.Record envelope = new GenericData.Record(Schemas.SIGNED_VISIT);
        envelope.put("clinic_code", clinicCode);
        envelope.put("key_id", keyId);
        envelope.put("event_id", eventId);
        envelope.put("visit_version", version);
        envelope.put("signed_at", signedAtMillis);
        envelope.put("signature", ByteBuffer.wrap(signature));
        envelope.put("payload", ByteBuffer.wrap(payload));
        byte[] value = Contract.frame(Contract.SIGNED_VISIT_ID, AvroJson.encode(Schemas.SIGNED_VISIT, envelope));
        return new Sealed(visit.get("visit_code").toString(), messageKey(event).getBytes(StandardCharsets.UTF_8),
                payload, signingInput, signature, value);
    }

    /** The personal ID, or `card:` and the first BHYT card number for a record without one (section 3). */
    static String messageKey(JsonNode event) {
        JsonNode patient = event.path("patient");
        JsonNode personalId = patient.get("personal_id");
        if (personalId != null && personalId.isTextual() && !personalId.textValue().isEmpty()) {
            return personalId.textValue();
        }
        JsonNode cards = patient.path("insurance_card_numbers");
        if (!cards.isArray() || cards.isEmpty() || !cards.get(0).isTextual()) {
            throw new AvroJson.Mismatch("patient", "has neither a personal_id nor an insurance card number to key by");
        }
        return "card:" + cards.get(0).textValue();
    }
}
