//! Credential material. Session tokens are random and signed with the server key, so a forged
//! or mangled cookie is refused before any lookup; API tokens are random with a fixed prefix.
//! Only SHA-256 hashes of either are stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

pub const API_TOKEN_PREFIX: &str = "cst_";

/// The server's signing key.
pub struct Keys {
    session: SecretBox<[u8; 32]>,
}

impl Keys {
    pub fn new(key: [u8; 32]) -> Self {
        Keys {
            session: SecretBox::new(Box::new(key)),
        }
    }

    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Keys::new(key)
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.session.expose_secret())
            .expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session token: `random.signature`.
    pub fn new_session_token(&self) -> String {
        let random = random_bytes();
        format!("{}.{}", B64.encode(random), B64.encode(self.sign(&random)))
    }

    /// The stored hash of a session token whose signature holds; `None` for anything forged.
    pub fn session_token_hash(&self, token: &str) -> Option<Vec<u8>> {
        let (random, signature) = token.split_once('.')?;
        let random = B64.decode(random).ok()?;
        let signature = B64.decode(signature).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(self.session.expose_secret()).ok()?;
        mac.update(&random);
        // verify_slice compares in constant time.
        mac.verify_slice(&signature).ok()?;
        Some(sha256(&random))
    }

    /// The CSRF token of a browser session: derived from the session's id under the server
    /// key, so it needs no storage, differs per session, and no one without the key can make
    /// the token of another's session.
    pub fn csrf_token(&self, session_id: uuid::Uuid) -> String {
        B64.encode(self.sign(&csrf_input(session_id)))
    }

    /// Whether `given` is the CSRF token of the session, compared in constant time.
    pub fn csrf_token_matches(&self, session_id: uuid::Uuid, given: &str) -> bool {
        let Ok(given) = B64.decode(given) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.session.expose_secret()) else {
            return false;
        };
        mac.update(&csrf_input(session_id));
        mac.verify_slice(&given).is_ok()
    }
}

/// What a session's CSRF token signs: a purpose prefix keeps it from ever equalling a
/// session token's signature.
fn csrf_input(session_id: uuid::Uuid) -> Vec<u8> {
    let mut input = b"csrf\0".to_vec();
    input.extend_from_slice(session_id.as_bytes());
    input
}

pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// A new API token and the short prefix shown in listings.
pub fn new_api_token() -> (String, String) {
    let token = format!("{API_TOKEN_PREFIX}{}", B64.encode(random_bytes()));
    let prefix = token.chars().take(API_TOKEN_PREFIX.len() + 6).collect();
    (token, prefix)
}

/// A single-use secret for links (invitations).
pub fn new_opaque_token() -> String {
    B64.encode(random_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_token_verifies_only_under_its_own_key() {
        let keys = Keys::random();
        let token = keys.new_session_token();
        assert!(keys.session_token_hash(&token).is_some());
        assert!(Keys::random().session_token_hash(&token).is_none());
    }

    #[test]
    fn a_tampered_session_token_is_refused() {
        let keys = Keys::random();
        let token = keys.new_session_token();
        let (random, sig) = token.split_once('.').unwrap();
        let mut bytes = B64.decode(random).unwrap();
        bytes[0] ^= 1;
        let forged = format!("{}.{sig}", B64.encode(bytes));
        assert!(keys.session_token_hash(&forged).is_none());
        assert!(keys.session_token_hash("no-dot").is_none());
        assert!(keys.session_token_hash("a.b.c").is_none());
    }
}
