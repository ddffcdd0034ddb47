package vn.healthbook.publisher;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.Signature;
import java.security.spec.NamedParameterSpec;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Arrays;
import java.util.Base64;

/** Ed25519 with the JDK's own provider: keys from PKCS#8 PEM or a raw seed, and pure signatures (RFC 8032). */
final class Ed25519Keys {
    private Ed25519Keys() {
    }

    /** The private key in a PKCS#8 PEM file, as `healthbook clinic keygen` writes it. */
    static PrivateKey fromPem(Path path) throws IOException, GeneralSecurityException {
        String pem = Files.readString(path, StandardCharsets.US_ASCII);
        String body = pem.replaceAll("-----(BEGIN|END) PRIVATE KEY-----", "").replaceAll("\\s", "");
        byte[] der = Base64.getDecoder().decode(body);
        return KeyFactory.getInstance("Ed25519").generatePrivate(new PKCS8EncodedKeySpec(der));
    }

    /** The key pair of a 32-byte seed (the RFC 8032 private key), public half included. */
    static KeyPair fromSeed(byte[] seed) throws GeneralSecurityException {
        if (seed.length != 32) {
            throw new GeneralSecurityException("an Ed25519 seed is 32 bytes, not " + seed.length);
        }
        KeyPairGenerator generator = KeyPairGenerator.getInstance("Ed25519");
        generator.initialize(NamedParameterSpec.ED25519, new FixedBytes(seed));
        return generator.generateKeyPair();
    }

    /** The raw 32-byte public key: the end of its X.509 SubjectPublicKeyInfo encoding. */
    static byte[] raw(PublicKey key) {
        byte[] encoded = key.getEncoded();
        return Arrays.copyOfRange(encoded, encoded.length - 32, encoded.length);
    }

    static byte[] sign(PrivateKey key, byte[] message) throws GeneralSecurityException {
        Signature signature = Signature.getInstance("Ed25519");
        signature.initSign(key);
        signature.update(message);
        return signature.sign();
    }

    /** A "random" source that hands out the seed: the JDK generator draws the private key from it. */
    private static final class FixedBytes extends SecureRandom {
        private static final long serialVersionUID = 1L;
        private final byte[] seed;

        FixedBytes(byte[] seed) {
            this.seed = seed.clone();
        }

        @Override
        public void nextBytes(byte[] bytes) {
            System.arraycopy(seed, 0, bytes, 0, Math.min(seed.length, bytes.length));
        }
    }
}
