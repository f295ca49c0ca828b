//! `X-Hub-Signature-256` for WhatsApp webhooks (SEC-9).
//!
//! Meta signs every webhook POST with HMAC-SHA256 of the raw request body, keyed with
//! the app secret, and sends `sha256=<hex digest>`. The check must run over the exact
//! bytes received, before any parsing: re-serialising parsed JSON would change them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header Meta puts the signature in.
pub const HEADER: &str = "X-Hub-Signature-256";

const PREFIX: &str = "sha256=";
const DIGEST_LEN: usize = 32;

/// True only when `header` is `sha256=<hex>` and the hex is the HMAC-SHA256 of
/// `raw_body` under `app_secret`.
///
/// A missing, empty, malformed or wrong header is `false`, and so is an empty app
/// secret: a channel without a secret must refuse everything rather than accept a
/// signature anyone can compute. Hex is accepted in either case; the digest comparison
/// is constant-time (`hmac`'s `verify_slice`).
pub fn verify(app_secret: &[u8], raw_body: &[u8], header: Option<&str>) -> bool {
    if app_secret.is_empty() {
        return false;
    }
    let Some(digest) = header.and_then(decode_header) else {
        return false;
    };
    let mut mac = new_mac(app_secret);
    mac.update(raw_body);
    mac.verify_slice(&digest).is_ok()
}

/// The `X-Hub-Signature-256` value Meta would send for `body`: `sha256=<lower hex>`.
/// For tests and the load generator.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = new_mac(app_secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

fn new_mac(app_secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    HmacSha256::new_from_slice(app_secret).expect("HMAC takes a key of any length")
}

fn decode_header(value: &str) -> Option<[u8; DIGEST_LEN]> {
    let value = value.trim();
    let prefix = value.get(..PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let hex_digest = &value[PREFIX.len()..];
    let mut digest = [0u8; DIGEST_LEN];
    // `decode_to_slice` refuses odd lengths, non-hex characters and any length other
    // than exactly 32 bytes, so a truncated signature can never pass.
    hex::decode_to_slice(hex_digest, &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret-from-the-meta-dashboard";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

    // proves: SEC-9
    #[test]
    fn a_signature_made_with_the_app_secret_is_accepted() {
        let header = sign(SECRET, BODY);
        assert!(header.starts_with("sha256="));
        assert_eq!(header.len(), "sha256=".len() + 64);
        assert!(verify(SECRET, BODY, Some(&header)));
    }

    // proves: SEC-9
    #[test]
    fn a_missing_signature_is_refused() {
        assert!(!verify(SECRET, BODY, None));
        assert!(!verify(SECRET, BODY, Some("")));
    }

    // proves: SEC-9
    #[test]
    fn a_signature_over_other_bytes_is_refused() {
        let header = sign(SECRET, BODY);
        let tampered = br#"{"object":"whatsapp_business_account","entry":[{}]}"#;
        assert!(!verify(SECRET, tampered, Some(&header)));
        // One changed byte, even whitespace, is another body.
        let reformatted = br#"{"object": "whatsapp_business_account","entry":[]}"#;
        assert!(!verify(SECRET, reformatted, Some(&header)));
    }

    // proves: SEC-9
    #[test]
    fn a_signature_made_with_another_secret_is_refused() {
        let header = sign(b"someone-elses-secret", BODY);
        assert!(!verify(SECRET, BODY, Some(&header)));
    }

    // proves: SEC-9
    #[test]
    fn garbled_signature_headers_are_refused() {
        let good = sign(SECRET, BODY);
        let hex_part = &good["sha256=".len()..];
        let cases = [
            hex_part.to_string(),                    // no prefix
            format!("sha1={hex_part}"),              // wrong algorithm
            format!("sha256={}", &hex_part[..62]),   // truncated
            format!("sha256={hex_part}00"),          // too long
            format!("sha256={}zz", &hex_part[..62]), // not hex
            format!("sha256= {hex_part}"),           // space inside
            "sha256=".to_string(),                   // empty digest
            format!("sha256={}", "0".repeat(64)),    // right shape, wrong value
        ];
        for case in cases {
            assert!(!verify(SECRET, BODY, Some(&case)), "accepted {case:?}");
        }
    }

    // proves: SEC-9
    #[test]
    fn an_empty_app_secret_refuses_everything() {
        let header = sign(b"", BODY);
        assert!(!verify(b"", BODY, Some(&header)));
    }

    #[test]
    fn upper_case_hex_and_prefix_are_accepted() {
        let good = sign(SECRET, BODY);
        let upper = format!("SHA256={}", good["sha256=".len()..].to_ascii_uppercase());
        assert!(verify(SECRET, BODY, Some(&upper)));
        assert!(verify(SECRET, BODY, Some(&format!("  {good}  "))));
    }

    #[test]
    fn the_signature_matches_a_known_hmac_sha256_vector() {
        // RFC 4231 test case 2.
        let header = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            header,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
