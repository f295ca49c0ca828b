//! Password hashing (Argon2id, unique salt per hash) and the policy for new passwords (SEC-4).
//! Hashing is deliberately slow, so it runs on the blocking pool, never on async threads.

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;

pub const MIN_LENGTH: usize = 12;
/// Beyond this a "password" is an attempt to make us hash megabytes.
pub const MAX_LENGTH: usize = 256;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

/// Number of entries in the shipped common-password list.
pub fn common_list_len() -> usize {
    COMMON.len()
}

/// Refuses passwords that are short, very long, on the common-password list, or the
/// account's own email.
pub fn check_policy(password: &SecretString, email: &str) -> Result<(), Error> {
    let pw = password.expose_secret();
    let chars = pw.chars().count();
    if chars < MIN_LENGTH {
        return Err(Error::bad_request(
            "weak_password",
            format!("the password must have at least {MIN_LENGTH} characters"),
        ));
    }
    if chars > MAX_LENGTH {
        return Err(Error::bad_request(
            "weak_password",
            format!("the password must have at most {MAX_LENGTH} characters"),
        ));
    }
    let lower = pw.to_lowercase();
    if COMMON.contains(lower.as_str()) || lower == email.to_lowercase() {
        return Err(Error::bad_request(
            "weak_password",
            "that password is too common; choose another",
        ));
    }
    Ok(())
}

pub async fn hash(password: SecretString) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })
    .await?
}

/// Checks a password against a stored hash. With no stored hash (unknown account) it still
/// spends the same work on a fixed hash, so timing does not reveal which accounts exist.
pub async fn verify(password: SecretString, stored: Option<String>) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let ok = Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        Ok(ok && known)
    })
    .await?
}

static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(b"an account that does not exist", &salt)
        .expect("argon2 hashes a constant")
        .to_string()
});

#[cfg(test)]
mod tests {
    use super::*;

    // proves: SEC-4
    #[test]
    fn the_common_password_list_has_at_least_ten_thousand_entries() {
        assert!(common_list_len() >= 10_000, "only {}", common_list_len());
    }

    // proves: SEC-4
    #[test]
    fn short_common_and_own_email_passwords_are_refused() {
        let refuse = |pw: &str| check_policy(&SecretString::from(pw), "ana@example.com").is_err();
        assert!(refuse("short-pw"));
        assert!(refuse("ana@example.com"));
        let common = COMMON
            .iter()
            .find(|p| p.chars().count() >= MIN_LENGTH)
            .unwrap();
        assert!(refuse(common), "{common} accepted");
        assert!(!refuse("correct horse battery staple"));
    }

    // proves: SEC-4
    #[tokio::test]
    async fn hashes_are_argon2id_with_a_unique_salt_and_verify() {
        let a = hash("correct horse battery staple".into()).await.unwrap();
        let b = hash("correct horse battery staple".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "same password, same salt");
        assert!(
            verify("correct horse battery staple".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery staple".into(), Some(a))
            .await
            .unwrap());
        assert!(!verify("anything at all".into(), None).await.unwrap());
    }
}
