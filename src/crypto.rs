//! Sealing tenant secrets at rest (SEC-10): channel tokens, app secrets, API keys. AES-256-GCM
//! under a key from the environment, a fresh random nonce per seal, and the record's own
//! identity bound in as associated data, so a sealed blob copied onto another row (or another
//! tenant) does not open there.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

pub struct Sealer {
    key: SecretBox<[u8; 32]>,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the sealed secret does not open under this key and record")]
    Mismatch,
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Self {
        Sealer {
            key: SecretBox::new(Box::new(key)),
        }
    }

    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Sealer::new(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.key.expose_secret()).expect("the key is 32 bytes")
    }

    /// `version || nonce || ciphertext+tag`, bound to `context` (e.g. "inbox:<id>").
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Mismatch)
    }

    /// Seals a serialisable value (a struct of secrets) as JSON.
    pub fn seal_json<T: serde::Serialize>(&self, value: &T, context: &str) -> Vec<u8> {
        let json = serde_json::to_vec(value).expect("secrets serialise");
        self.seal(&json, context)
    }

    pub fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        sealed: &[u8],
        context: &str,
    ) -> Result<T, SealError> {
        let plain = self.open(sealed, context)?;
        serde_json::from_slice(&plain).map_err(|_| SealError::Malformed)
    }
}

/// A key for signing what the server vouches for (an erasure's completion receipt), derived from
/// the master key with a label of its own: HMAC-SHA256(master, label). A signature made for one
/// purpose never verifies for another, and the master key itself signs nothing.
#[derive(Clone)]
pub struct Signer {
    key: std::sync::Arc<SecretBox<[u8; 32]>>,
}

impl Sealer {
    /// The signing key for `label` (e.g. "custodian/erasure-receipt/v1").
    pub fn signer(&self, label: &str) -> Signer {
        let derived = hmac_sha256(self.key.expose_secret(), label.as_bytes());
        Signer {
            key: std::sync::Arc::new(SecretBox::new(Box::new(derived))),
        }
    }
}

impl Signer {
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        hmac_sha256(self.key.expose_secret(), data)
    }

    /// Whether `signature` is this key's signature of `data`, compared in constant time.
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> bool {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(self.key.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(data);
        mac.verify_slice(signature).is_ok()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Serialises a `SecretString` for sealing; never used for responses or logs.
pub mod secret_string {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.expose_secret())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // proves: SEC-10
    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_its_record() {
        let sealer = Sealer::random();
        let sealed = sealer.seal(b"EAAG-access-token", "inbox:1");
        assert!(
            !sealed.windows(6).any(|w| w == b"EAAG-a"),
            "plaintext visible"
        );
        assert_eq!(
            sealer.open(&sealed, "inbox:1").unwrap(),
            b"EAAG-access-token"
        );
        assert!(
            sealer.open(&sealed, "inbox:2").is_err(),
            "opened on another record"
        );
        assert!(
            Sealer::random().open(&sealed, "inbox:1").is_err(),
            "opened under another key"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&tampered, "inbox:1").is_err());
        assert!(sealer.open(&[1, 2, 3], "inbox:1").is_err());
    }

    #[test]
    fn a_derived_signature_verifies_only_under_its_own_label_and_data() {
        let sealer = Sealer::random();
        let signer = sealer.signer("receipt");
        let sig = signer.sign(b"erased 3 messages");
        assert!(signer.verify(b"erased 3 messages", &sig));
        assert!(!signer.verify(b"erased 4 messages", &sig));
        assert!(!sealer.signer("other").verify(b"erased 3 messages", &sig));
        assert!(!Sealer::random()
            .signer("receipt")
            .verify(b"erased 3 messages", &sig));
    }

    // proves: SEC-10
    #[test]
    fn sealing_the_same_secret_twice_gives_different_bytes() {
        let sealer = Sealer::random();
        assert_ne!(sealer.seal(b"same", "c"), sealer.seal(b"same", "c"));
    }
}
