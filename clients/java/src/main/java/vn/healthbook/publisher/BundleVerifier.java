package vn.healthbook.publisher;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.Signature;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Date;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import javax.naming.InvalidNameException;
import javax.naming.ldap.LdapName;
import javax.naming.ldap.Rdn;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;

/**
 * Checks every visit of a FHIR Bundle exported by healthbook from the Bundle alone and the CA certificate
 * (docs/contract.md, sections 6 and 9): the certificate chains to the CA, names the visit's facility in its UID
 * and is valid when the visit was signed; the signature over the envelope verifies with the certificate's key;
 * the envelope is this Encounter; and the Bundle's diagnoses, medicines and dates are the signed ones.
 */
final class BundleVerifier {
    static final String SIGNED_VISIT_TYPE = "application/vnd.healthbook.signed-visit+avro";
    static final String CERTIFICATE_TYPE = "application/pkix-cert";
    static final String ICD10 = "http://hl7.org/fhir/sid/icd-10";
    private static final DateTimeFormatter MINUTE = DateTimeFormatter.ofPattern("yyyyMMddHHmm");
    private static final DateTimeFormatter ISO_MINUTE = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm");
    private static final ZoneOffset VIETNAM = ZoneOffset.ofHours(7);

    enum Status { VERIFIED, NOT_VERIFIABLE, FAILED }

    /** What checking one visit found, as the line `verify` prints. */
    record Verdict(String visit, Status status, String why) {
        String line() {
            return status + " " + visit + (why.isEmpty() ? "" : ": " + why);
        }
    }

    /** A visit that does not verify, with the reason a reader can act on. */
    static final class Failed extends Exception {
        private static final long serialVersionUID = 1L;

        Failed(String why) {
            super(why);
        }
    }

    private final X509Certificate authority;

    BundleVerifier(X509Certificate authority) {
        this.authority = authority;
    }

    static X509Certificate certificate(byte[] encoded) throws CertificateException {
        return (X509Certificate) CertificateFactory.getInstance("X.509")
                .generateCertificate(new ByteArrayInputStream(encoded));
    }

    /** One verdict per Encounter of the Bundle, in its order. */
    List<Verdict> verify(JsonNode bundle) {
        Map<String, JsonNode> byUrl = new HashMap<>();
        for (JsonNode entry : bundle.path("entry")) {
            byUrl.put(entry.path("fullUrl").asText(), entry.path("resource"));
        }
        List<Verdict> verdicts = new ArrayList<>();
        for (JsonNode entry : bundle.path("entry")) {
            JsonNode resource = entry.path("resource");
            if (!"Encounter".equals(resource.path("resourceType").asText())) {
                continue;
            }
            String url = entry.path("fullUrl").asText();
            String visit = visitOf(resource);
            JsonNode provenance = provenanceOf(bundle, url);
            if (provenance == null) {
                verdicts.add(new Verdict(visit, Status.NOT_VERIFIABLE,
                        "no signature in this Bundle (a sealed list entry: export the visit's detail)"));
                continue;
            }
            try {
                verdicts.add(new Verdict(visit, Status.VERIFIED, check(bundle, byUrl, url, resource, provenance)));
            } catch (Failed failed) {
                verdicts.add(new Verdict(visit, Status.FAILED, failed.getMessage()));
            }
        }
        return verdicts;
    }

    private String check(JsonNode bundle, Map<String, JsonNode> byUrl, String url, JsonNode encounter,
                         JsonNode provenance) throws Failed {
        JsonNode signatureNode = provenance.path("signature").path(0);
        byte[] keyMaterial = binary(byUrl, extension(signatureNode, "/signing-key"), CERTIFICATE_TYPE,
                "no certificate: a raw key in the Bundle proves nothing");
        byte[] envelopeBytes = null;
        for (JsonNode entity : provenance.path("entity")) {
            JsonNode what = byUrl.get(entity.path("what").path("reference").asText());
            if (what != null && SIGNED_VISIT_TYPE.equals(what.path("contentType").asText())) {
                envelopeBytes = Base64.getDecoder().decode(what.path("data").asText());
            }
        }
        if (envelopeBytes == null) {
            throw new Failed("the signed envelope is not in the Bundle");
        }
        GenericRecord envelope = decode(Schemas.SIGNED_VISIT, Contract.SIGNED_VISIT_ID, envelopeBytes, "envelope");
        byte[] payloadBytes = bytes(envelope.get("payload"));
        GenericRecord payload = decode(Schemas.VISIT_EVENT, Contract.VISIT_EVENT_ID, payloadBytes, "payload");
        String clinic = envelope.get("clinic_code").toString();
        long signedAt = (Long) envelope.get("signed_at");
        X509Certificate certificate;
        try {
            certificate = certificate(keyMaterial);
        } catch (CertificateException e) {
            throw new Failed("the certificate cannot be read: " + e.getMessage());
        }
        chain(certificate, clinic, signedAt);
        byte[] signature = bytes(envelope.get("signature"));
        if (!Arrays.equals(signature, Base64.getDecoder().decode(signatureNode.path("data").asText()))) {
            throw new Failed("the Provenance's signature is not the envelope's");
        }
        byte[] signingInput = new Contract.SigningInput(Contract.VISIT_CONTEXT)
                .text(clinic).text(envelope.get("key_id").toString()).text(envelope.get("event_id").toString())
                .integer((Long) envelope.get("visit_version")).integer(signedAt).bytes(payloadBytes).toBytes();
        try {
            Signature verifier = Signature.getInstance("Ed25519");
            verifier.initVerify(certificate.getPublicKey());
            verifier.update(signingInput);
            if (!verifier.verify(signature)) {
                throw new Failed("the signature does not verify with the certificate's key: the envelope was altered");
            }
        } catch (GeneralSecurityException e) {
            throw new Failed("the signature cannot be checked: " + e.getMessage());
        }
        String facility = payload.get("facility_code").toString();
        String visitCode = payload.get("visit_code").toString();
        if (!facility.equals(clinic) || !(facility + "/" + visitCode).equals(visitOf(encounter))) {
            throw new Failed("the envelope is visit " + facility + "/" + visitCode + ", not this Encounter");
        }
        content(bundle, url, encounter, payload);
        return "signed by " + clinic + " with key " + envelope.get("key_id") + " at " + new Date(signedAt).toInstant();
    }

    /** The certificate is issued by the CA, valid when the visit was signed, and names the signing clinic. */
    private void chain(X509Certificate certificate, String clinic, long signedAt) throws Failed {
        if (!certificate.getIssuerX500Principal().equals(authority.getSubjectX500Principal())) {
            throw new Failed("the certificate was not issued by the trusted CA (issuer "
                    + certificate.getIssuerX500Principal().getName() + ")");
        }
        try {
            certificate.verify(authority.getPublicKey());
        } catch (GeneralSecurityException e) {
            throw new Failed("the certificate was not issued by the trusted CA (" + e.getMessage() + ")");
        }
        try {
            certificate.checkValidity(new Date(signedAt));
        } catch (CertificateException e) {
            throw new Failed("the certificate is valid from " + certificate.getNotBefore().toInstant() + " to "
                    + certificate.getNotAfter().toInstant() + ", not when the visit was signed");
        }
        String uid = subjectUid(certificate);
        if (!("MA_CSKCB:" + clinic).equals(uid)) {
            throw new Failed("the certificate names " + uid + ", not MA_CSKCB:" + clinic);
        }
    }

    /** The Bundle's diagnoses, medicines and period of this Encounter are the ones the clinic signed. */
    private static void content(JsonNode bundle, String url, JsonNode encounter, GenericRecord payload)
            throws Failed {
        TreeSet<String> signedCodes = new TreeSet<>();
        signedCodes.add(payload.get("main_diagnosis_code").toString());
        for (Object code : (List<?>) payload.get("secondary_diagnosis_codes")) {
            signedCodes.add(code.toString());
        }
        TreeSet<String> signedDrugs = new TreeSet<>();
        for (Object line : (List<?>) payload.get("medicines")) {
            signedDrugs.add(((GenericRecord) line).get("drug_code").toString());
        }
        TreeSet<String> shownCodes = new TreeSet<>();
        TreeSet<String> shownDrugs = new TreeSet<>();
        for (JsonNode entry : bundle.path("entry")) {
            JsonNode resource = entry.path("resource");
            if (!url.equals(resource.path("encounter").path("reference").asText())) {
                continue;
            }
            JsonNode coding = resource.path("Condition".equals(resource.path("resourceType").asText())
                    ? "code" : "medicationCodeableConcept").path("coding").path(0);
            switch (resource.path("resourceType").asText()) {
                case "Condition" -> {
                    if (ICD10.equals(coding.path("system").asText())) {
                        shownCodes.add(coding.path("code").asText());
                    }
                }
                case "MedicationRequest" -> shownDrugs.add(coding.path("code").asText());
                default -> { }
            }
        }
        if (!shownCodes.equals(signedCodes)) {
            throw new Failed("the Bundle's diagnoses " + shownCodes + " are not the signed " + signedCodes);
        }
        if (!shownDrugs.equals(signedDrugs)) {
            throw new Failed("the Bundle's medicines " + shownDrugs + " are not the signed " + signedDrugs);
        }
        String start = LocalDateTime.parse(payload.get("admitted_at").toString(), MINUTE).format(ISO_MINUTE);
        String shownStart = encounter.path("period").path("start").asText();
        if (!shownStart.startsWith(start) || !shownStart.endsWith(VIETNAM.getId())) {
            throw new Failed("the Bundle's admission " + shownStart + " is not the signed " + start);
        }
    }

    private static String visitOf(JsonNode encounter) {
        for (JsonNode identifier : encounter.path("identifier")) {
            String system = identifier.path("system").asText();
            int at = system.indexOf("/sid/ma-lk/");
            if (at >= 0) {
                return system.substring(at + "/sid/ma-lk/".length()) + "/" + identifier.path("value").asText();
            }
        }
        return "(an Encounter without MA_LK)";
    }

    private static JsonNode provenanceOf(JsonNode bundle, String url) {
        for (JsonNode entry : bundle.path("entry")) {
            JsonNode resource = entry.path("resource");
            if ("Provenance".equals(resource.path("resourceType").asText())) {
                for (JsonNode target : resource.path("target")) {
                    if (url.equals(target.path("reference").asText())) {
                        return resource;
                    }
                }
            }
        }
        return null;
    }

    private static String extension(JsonNode signature, String suffix) {
        for (JsonNode extension : signature.path("extension")) {
            if (extension.path("url").asText().endsWith(suffix)) {
                return extension.path("valueReference").path("reference").asText();
            }
        }
        return "";
    }

    private static byte[] binary(Map<String, JsonNode> byUrl, String reference, String type, String otherwise)
            throws Failed {
        JsonNode binary = byUrl.get(reference);
        if (binary == null || !type.equals(binary.path("contentType").asText())) {
            throw new Failed(otherwise);
        }
        return Base64.getDecoder().decode(binary.path("data").asText());
    }

    private static GenericRecord decode(Schema schema, int schemaId, byte[] framed, String what) throws Failed {
        if (framed.length < 5 || framed[0] != 0 || ByteBuffer.wrap(framed, 1, 4).getInt() != schemaId) {
            throw new Failed("the " + what + " is not framed with schema id " + schemaId);
        }
        try {
            return new GenericDatumReader<GenericRecord>(schema).read(null,
                    DecoderFactory.get().binaryDecoder(framed, 5, framed.length - 5, null));
        } catch (IOException | RuntimeException e) {
            throw new Failed("the " + what + " cannot be read: " + e.getMessage());
        }
    }

    private static byte[] bytes(Object value) {
        ByteBuffer buffer = ((ByteBuffer) value).duplicate();
        byte[] out = new byte[buffer.remaining()];
        buffer.get(out);
        return out;
    }

    private static String subjectUid(X509Certificate certificate) {
        try {
            for (Rdn rdn : new LdapName(certificate.getSubjectX500Principal().getName()).getRdns()) {
                if (rdn.getType().equalsIgnoreCase("UID") || rdn.getType().equals("0.9.2342.19200300.100.1.1")) {
                    Object value = rdn.getValue();
                    return value instanceof byte[] raw ? new String(raw, StandardCharsets.UTF_8)
                            : value.toString();
                }
            }
        } catch (InvalidNameException e) {
            return "(an unreadable subject)";
        }
        return "(no UID)";
    }
}
