//! Two-factor sign-in (SEC-7): TOTP (RFC 6238) with ten single-use recovery codes, and the
//! tenant's policy that makes it mandatory.
//!
//! A member enrols from a browser session: the secret is made here, sealed at rest under the
//! member's own record (SEC-10), shown once as text, as an `otpauth://` URI and as a QR code,
//! and in use only once a first code confirms it. Codes of the step before and after the
//! current one are accepted (clocks drift), and each step's code works once: the last step
//! accepted is kept, and a code of that step or an earlier one is refused. Every check of a
//! code someone may be guessing is throttled like a password (SEC-5) and audited (AUD-2).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::guard::{Credential, Ctx};
use super::{password, session, AuthState};
use crate::audit::AuditEvent;
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::rbac::Role;

/// The name authenticator apps show next to the account.
pub const ISSUER: &str = "Custodian";
/// Seconds per TOTP step (RFC 6238's default, which every authenticator app uses).
const STEP: u64 = 30;
/// Bytes of secret: 160 bits, as RFC 4226 recommends.
const SECRET_BYTES: usize = 20;
/// How many recovery codes an enrolment gets.
pub const RECOVERY_CODES: usize = 10;
/// How long the second step of a sign-in may wait for its code.
pub const CHALLENGE_SECS: i64 = 300;
/// Wrong codes a challenge takes before it dies (the throttle also counts them).
const CHALLENGE_MAX_FAILURES: i32 = 5;
/// How recent a member's last second-factor check must be to create an API token.
pub const RECENT_CHECK_MINUTES: i32 = 10;
/// The paths a member who owes an enrolment may still reach; the guard refuses the rest.
pub const WHILE_ENROLLING: &[&str] = &[
    "/api/v1/auth/mfa",
    "/api/v1/auth/mfa/enrolment",
    "/api/v1/auth/mfa/enrolment/confirm",
    "/api/v1/auth/logout",
    "/app/mfa",
    "/app/mfa/enrolment",
    "/app/mfa/confirm",
    "/app/logout",
];

/// Who must use two-factor sign-in in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = MfaRequirement)]
pub enum Requirement {
    /// Nobody must; anyone may.
    None,
    /// Owners and admins must.
    Admins,
    /// Every member must.
    Everyone,
}

impl Requirement {
    pub fn as_str(self) -> &'static str {
        match self {
            Requirement::None => "none",
            Requirement::Admins => "admins",
            Requirement::Everyone => "everyone",
        }
    }

    fn parse(raw: &str) -> Requirement {
        match raw {
            "admins" => Requirement::Admins,
            "everyone" => Requirement::Everyone,
            _ => Requirement::None,
        }
    }

    pub fn applies_to(self, role: Role) -> bool {
        match self {
            Requirement::None => false,
            Requirement::Admins => matches!(role, Role::Owner | Role::Admin),
            Requirement::Everyone => true,
        }
    }
}

/// The record a member's secret is sealed to: copied onto another member, it does not open.
fn seal_context(tenant_id: Uuid, member_id: Uuid) -> String {
    format!("mfa:{tenant_id}:{member_id}")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn totp(secret: &[u8], account: Option<&str>) -> totp_rs::Totp {
    let mut builder = totp_rs::Builder::new().with_secret(secret.to_vec());
    if let Some(account) = account {
        builder = builder
            .with_account_name(account.replace(':', "_"))
            .with_issuer(Some(ISSUER));
    }
    builder
        .build()
        .expect("a 160-bit secret with the defaults is valid")
}

/// The time step whose code `code` is, among the step of `now` and the one either side; the
/// code is compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(secret, None);
    let current = now / STEP;
    let mut found = None;
    for step in current.saturating_sub(1)..=current + 1 {
        let expected = totp.generate(step * STEP).to_string();
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

/// A recovery code as typed: case, dashes and spaces do not matter.
fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn recovery_hash(member_id: Uuid, normalised: &str) -> Vec<u8> {
    let mut input = b"mfa-recovery\0".to_vec();
    input.extend_from_slice(member_id.as_bytes());
    input.extend_from_slice(normalised.as_bytes());
    super::token::sha256(&input)
}

/// Ten new recovery codes, `xxxx-xxxx-xxxx` of 32 letters and digits (60 random bits each).
fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: Vec<char> = (0..12)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect();
            chars
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// The QR code of `uri` as an SVG document, drawn here so the secret never leaves the server
/// for a third-party renderer.
pub fn qr_svg(uri: &str) -> String {
    use qrcode::render::svg;
    qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)
        .map(|code| {
            let svg = code
                .render::<svg::Color<'_>>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build();
            // The document without its XML declaration, to sit inline in a page.
            match svg.find("<svg") {
                Some(start) => svg[start..].to_string(),
                None => svg,
            }
        })
        .unwrap_or_default()
}

/// The tenant's requirement (none when never set).
pub async fn requirement(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Requirement> {
    let raw = sqlx::query_scalar!(
        "SELECT required FROM mfa_policy WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(raw.map_or(Requirement::None, |r| Requirement::parse(&r)))
}

/// Whether the member signs in with a second factor.
pub async fn enabled(conn: &mut PgConnection, tenant_id: Uuid, member_id: Uuid) -> Result<bool> {
    let enabled = sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM member_mfa
               WHERE tenant_id = $1 AND member_id = $2 AND confirmed_at IS NOT NULL
           ) AS "enabled!""#,
        tenant_id,
        member_id
    )
    .fetch_one(conn)
    .await?;
    Ok(enabled)
}

/// A member's two-factor sign-in as they see it.
#[derive(Serialize, ToSchema)]
#[schema(as = MfaStatus)]
pub struct Status {
    /// Sign-in asks for a code.
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub confirmed_at: Option<OffsetDateTime>,
    /// Recovery codes not used yet.
    pub recovery_codes_left: i64,
    /// The tenant requires two-factor sign-in of this member's role.
    pub required: bool,
    /// When an administrator last reset this member's two-factor sign-in, if they did since
    /// the member last enrolled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub reset_at: Option<OffsetDateTime>,
}

pub async fn status(state: &AuthState, ctx: &Ctx) -> Result<Status> {
    let mut tx = ctx.begin(state).await?;
    let row = sqlx::query!(
        r#"SELECT f.confirmed_at, f.reset_at,
                  (SELECT count(*) FROM mfa_recovery_code c
                   WHERE c.tenant_id = f.tenant_id AND c.member_id = f.member_id
                     AND c.used_at IS NULL) AS "left!"
           FROM member_mfa f WHERE f.tenant_id = $1 AND f.member_id = $2"#,
        ctx.tenant_id,
        ctx.member_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let required = requirement(&mut tx, ctx.tenant_id)
        .await?
        .applies_to(ctx.role);
    tx.commit().await?;
    let confirmed_at = row.as_ref().and_then(|r| r.confirmed_at);
    Ok(Status {
        enabled: confirmed_at.is_some(),
        confirmed_at,
        recovery_codes_left: if confirmed_at.is_some() {
            row.as_ref().map_or(0, |r| r.left)
        } else {
            0
        },
        required,
        reset_at: row.and_then(|r| r.reset_at),
    })
}

/// A new, unconfirmed enrolment: the only answer that holds the secret.
#[derive(Serialize, ToSchema)]
#[schema(as = MfaEnrolment)]
pub struct Enrolment {
    /// The secret in base32, for typing into an authenticator app.
    pub secret: String,
    /// The `otpauth://totp/...` URI the QR code holds.
    pub otpauth_uri: String,
    /// The QR code, an SVG document.
    pub qr_svg: String,
}

fn browser_session(ctx: &Ctx) -> Result<Uuid> {
    match ctx.credential {
        Credential::Session(id) => Ok(id),
        Credential::ApiToken(_) => Err(Error::Forbidden(
            "two-factor sign-in is managed from a browser session, not with an API token",
        )),
    }
}

/// Starts (or starts again) the caller's enrolment with a new secret, sealed at rest. It is
/// not in use until [`confirm`] is given a code of it.
pub async fn start_enrolment(state: &AuthState, ctx: &Ctx) -> Result<Enrolment> {
    browser_session(ctx)?;
    let mut tx = ctx.begin(state).await?;
    let who = sqlx::query!(
        r#"SELECT m.email, t.slug,
                  (f.confirmed_at IS NOT NULL) AS "confirmed!"
           FROM member m JOIN tenant t ON t.id = m.tenant_id
           LEFT JOIN member_mfa f ON f.tenant_id = m.tenant_id AND f.member_id = m.id
           WHERE m.tenant_id = $1 AND m.id = $2"#,
        ctx.tenant_id,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if who.confirmed {
        return Err(Error::conflict(
            "mfa_already_enabled",
            "two-factor sign-in is already on: disable it first to enrol another authenticator",
        ));
    }
    let mut secret = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill(&mut secret);
    let sealed = state
        .sealer
        .seal(&secret, &seal_context(ctx.tenant_id, ctx.member_id));
    sqlx::query!(
        "INSERT INTO member_mfa (tenant_id, member_id, sealed_secret)
         VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, member_id) DO UPDATE
         SET sealed_secret = EXCLUDED.sealed_secret, confirmed_at = NULL, last_step = NULL,
             updated_at = now()",
        ctx.tenant_id,
        ctx.member_id,
        sealed
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("auth.mfa.enrolment_started", "member", ctx.member_id),
    )
    .await?;
    tx.commit().await?;
    enrolment(&secret, &who.email, &who.slug)
}

fn enrolment(secret: &[u8], email: &str, slug: &str) -> Result<Enrolment> {
    let totp = totp(secret, Some(&format!("{email} ({slug})")));
    let otpauth_uri = totp
        .to_url()
        .map_err(|e| anyhow::anyhow!("otpauth URI: {e}"))?;
    Ok(Enrolment {
        secret: totp.secret().to_base32(),
        qr_svg: qr_svg(&otpauth_uri),
        otpauth_uri,
    })
}

/// The caller's enrolment that awaits its first code, shown again (a page reloaded); `None`
/// when there is none.
pub async fn pending_enrolment(state: &AuthState, ctx: &Ctx) -> Result<Option<Enrolment>> {
    browser_session(ctx)?;
    let mut tx = ctx.begin(state).await?;
    let who = sqlx::query!(
        "SELECT m.email, t.slug FROM member m JOIN tenant t ON t.id = m.tenant_id
         WHERE m.tenant_id = $1 AND m.id = $2",
        ctx.tenant_id,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let pending = secret(&mut tx, &state.sealer, ctx.tenant_id, ctx.member_id).await?;
    tx.commit().await?;
    match pending {
        Some((secret, false)) => Ok(Some(enrolment(&secret, &who.email, &who.slug)?)),
        _ => Ok(None),
    }
}

/// The member's sealed secret, opened; `None` when they have none.
async fn secret(
    conn: &mut PgConnection,
    sealer: &Sealer,
    tenant_id: Uuid,
    member_id: Uuid,
) -> Result<Option<(Vec<u8>, bool)>> {
    let row = sqlx::query!(
        "SELECT sealed_secret, confirmed_at FROM member_mfa
         WHERE tenant_id = $1 AND member_id = $2 FOR UPDATE",
        tenant_id,
        member_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some((sealed, confirmed_at)) = row.and_then(|r| Some((r.sealed_secret?, r.confirmed_at)))
    else {
        return Ok(None);
    };
    let secret = sealer
        .open(&sealed, &seal_context(tenant_id, member_id))
        .map_err(|e| anyhow::anyhow!("the member's MFA secret: {e}"))?;
    Ok(Some((secret, confirmed_at.is_some())))
}

/// Accepts `code` as a code of `secret` not used before: records its step, so it (and every
/// code of an earlier step) is refused from now on. Concurrent uses of one code: one wins.
async fn spend_totp(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
    secret: &[u8],
    code: &str,
) -> Result<bool> {
    let Some(step) = matching_step(secret, code, now_secs()) else {
        return Ok(false);
    };
    let step = i64::try_from(step).map_err(|_| anyhow::anyhow!("time step out of range"))?;
    let spent = sqlx::query!(
        "UPDATE member_mfa SET last_step = $3, updated_at = now()
         WHERE tenant_id = $1 AND member_id = $2 AND (last_step IS NULL OR last_step < $3)",
        tenant_id,
        member_id,
        step
    )
    .execute(conn)
    .await?;
    Ok(spent.rows_affected() == 1)
}

/// How a second factor was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Totp,
    RecoveryCode,
}

impl Factor {
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Totp => "totp",
            Factor::RecoveryCode => "recovery_code",
        }
    }
}

/// Checks a code of the member's confirmed authenticator, or one of their unused recovery
/// codes, and spends it (recovery codes are used up; an authenticator's code and those before
/// it stop working). `None` when it is neither; the caller counts that as a failure. The use of
/// a recovery code is audited here, in the caller's transaction.
pub async fn spend_factor(
    conn: &mut PgConnection,
    state: &AuthState,
    source: &crate::audit::AuditSource,
    tenant_id: Uuid,
    member_id: Uuid,
    code: &str,
) -> Result<Option<Factor>> {
    let Some((secret, true)) = secret(&mut *conn, &state.sealer, tenant_id, member_id).await?
    else {
        return Ok(None);
    };
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        let spent = spend_totp(&mut *conn, tenant_id, member_id, &secret, &digits).await?;
        return Ok(spent.then_some(Factor::Totp));
    }
    let normalised = normalise_recovery(code);
    if normalised.len() != 12 {
        return Ok(None);
    }
    let used = sqlx::query_scalar!(
        "UPDATE mfa_recovery_code SET used_at = now()
         WHERE tenant_id = $1 AND member_id = $2 AND code_hash = $3 AND used_at IS NULL
         RETURNING id",
        tenant_id,
        member_id,
        recovery_hash(member_id, &normalised)
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(code_id) = used else {
        return Ok(None);
    };
    let left = sqlx::query_scalar!(
        r#"SELECT count(*) AS "left!" FROM mfa_recovery_code
           WHERE tenant_id = $1 AND member_id = $2 AND used_at IS NULL"#,
        tenant_id,
        member_id
    )
    .fetch_one(&mut *conn)
    .await?;
    crate::audit::record(
        &mut *conn,
        source,
        AuditEvent::new("auth.mfa.recovery_code_used", "member", member_id)
            .after(json!({ "recovery_code_id": code_id, "recovery_codes_left": left })),
    )
    .await?;
    Ok(Some(Factor::RecoveryCode))
}

/// Records a wrong second-factor code (AUD-2).
pub async fn record_failure(
    conn: &mut PgConnection,
    source: &crate::audit::AuditSource,
    member_id: Uuid,
    during: &'static str,
) -> Result<()> {
    crate::audit::record(
        conn,
        source,
        AuditEvent::new("auth.mfa.failed", "member", member_id).after(json!({ "during": during })),
    )
    .await?;
    Ok(())
}

/// Marks the session as having proven a second factor just now.
pub async fn mark_verified(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    session_id: Uuid,
) -> Result<()> {
    sqlx::query!(
        "UPDATE session SET mfa_verified_at = now() WHERE id = $1 AND tenant_id = $2",
        session_id,
        tenant_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The wrong-code answer of every check.
fn invalid_code() -> Error {
    Error::bad_request("invalid_code", "the code is wrong, expired or already used")
}

/// Runs `check` under the member's second-factor throttle (SEC-5): per member and address,
/// like a password, so guessing codes through a stolen session or challenge is as slow as
/// guessing passwords. `check` (not started before the throttle lets it) answers `None` for a
/// wrong code, which spends the budget.
pub async fn throttled<T>(
    state: &AuthState,
    member_id: Uuid,
    ip: Option<std::net::IpAddr>,
    check: impl std::future::Future<Output = Result<Option<T>>>,
) -> Result<Option<T>> {
    let mut attempt = state
        .throttle
        .login_attempt(&format!("mfa\n{member_id}"), ip)?;
    if attempt.under_pressure() {
        attempt.wait_turn().await;
    }
    let outcome = check.await?;
    if outcome.is_some() {
        attempt.succeeded();
    }
    Ok(outcome)
}

/// Confirms the caller's enrolment with a first code: two-factor sign-in is on from now, and
/// the ten recovery codes are returned, the only time they are shown.
pub async fn confirm(state: &AuthState, ctx: &Ctx, code: &str) -> Result<Vec<String>> {
    let session_id = browser_session(ctx)?;
    let codes = throttled(state, ctx.member_id, ctx.meta.ip, async {
        let mut tx = ctx.begin(state).await?;
        let Some((secret, confirmed)) =
            secret(&mut tx, &state.sealer, ctx.tenant_id, ctx.member_id).await?
        else {
            return Err(Error::conflict(
                "no_enrolment",
                "start an enrolment first (POST /api/v1/auth/mfa/enrolment)",
            ));
        };
        if confirmed {
            return Err(Error::conflict(
                "mfa_already_enabled",
                "two-factor sign-in is already on",
            ));
        }
        if !spend_totp(&mut tx, ctx.tenant_id, ctx.member_id, &secret, code).await? {
            ctx.audit(
                &mut tx,
                AuditEvent::new("auth.mfa.failed", "member", ctx.member_id)
                    .after(json!({ "during": "enrolment" })),
            )
            .await?;
            tx.commit().await?;
            return Ok(None);
        }
        sqlx::query!(
            "UPDATE member_mfa SET confirmed_at = now(), reset_at = NULL, updated_at = now()
             WHERE tenant_id = $1 AND member_id = $2",
            ctx.tenant_id,
            ctx.member_id
        )
        .execute(&mut *tx)
        .await?;
        let codes = replace_recovery_codes(&mut tx, ctx.tenant_id, ctx.member_id).await?;
        mark_verified(&mut tx, ctx.tenant_id, session_id).await?;
        ctx.audit(
            &mut tx,
            AuditEvent::new("auth.mfa.enabled", "member", ctx.member_id)
                .after(json!({ "recovery_codes": RECOVERY_CODES })),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(codes))
    })
    .await?;
    codes.ok_or_else(invalid_code)
}

/// Replaces the member's recovery codes with ten new ones, returned in the clear.
async fn replace_recovery_codes(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
) -> Result<Vec<String>> {
    sqlx::query!(
        "DELETE FROM mfa_recovery_code WHERE tenant_id = $1 AND member_id = $2",
        tenant_id,
        member_id
    )
    .execute(&mut *conn)
    .await?;
    let codes = new_recovery_codes();
    for code in &codes {
        sqlx::query!(
            "INSERT INTO mfa_recovery_code (id, tenant_id, member_id, code_hash)
             VALUES ($1, $2, $3, $4)",
            Uuid::now_v7(),
            tenant_id,
            member_id,
            recovery_hash(member_id, &normalise_recovery(code))
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(codes)
}

/// A second-factor check within a session (before creating an API token): spends the code and
/// marks the session as recently checked.
pub async fn verify(state: &AuthState, ctx: &Ctx, code: &str) -> Result<()> {
    let session_id = browser_session(ctx)?;
    let factor = throttled(state, ctx.member_id, ctx.meta.ip, async {
        let mut tx = ctx.begin(state).await?;
        if !enabled(&mut tx, ctx.tenant_id, ctx.member_id).await? {
            return Err(not_enabled());
        }
        let source = crate::audit::AuditSource::member(ctx.tenant_id, ctx.member_id, &ctx.meta);
        let factor =
            spend_factor(&mut tx, state, &source, ctx.tenant_id, ctx.member_id, code).await?;
        match factor {
            Some(factor) => {
                mark_verified(&mut tx, ctx.tenant_id, session_id).await?;
                ctx.audit(
                    &mut tx,
                    AuditEvent::new("auth.mfa.verified", "session", session_id)
                        .after(json!({ "factor": factor.as_str() })),
                )
                .await?;
            }
            None => record_failure(&mut tx, &source, ctx.member_id, "verification").await?,
        }
        tx.commit().await?;
        Ok(factor)
    })
    .await?;
    factor.map(drop).ok_or_else(invalid_code)
}

fn not_enabled() -> Error {
    Error::conflict("mfa_not_enabled", "two-factor sign-in is not on")
}

/// What proves it is the member who turns two-factor sign-in off.
pub enum Proof {
    Code(String),
    Password(SecretString),
}

/// Turns the caller's two-factor sign-in off, given a current code (or recovery code) or their
/// password; refused while the tenant requires it of the caller's role.
pub async fn disable(state: &AuthState, ctx: &Ctx, proof: Proof) -> Result<()> {
    browser_session(ctx)?;
    {
        let mut tx = ctx.begin(state).await?;
        if requirement(&mut tx, ctx.tenant_id)
            .await?
            .applies_to(ctx.role)
        {
            return Err(Error::conflict(
                "mfa_mandatory",
                "your workspace requires two-factor sign-in for your role",
            ));
        }
        if !enabled(&mut tx, ctx.tenant_id, ctx.member_id).await? {
            return Err(not_enabled());
        }
        tx.commit().await?;
    }
    let done = throttled(state, ctx.member_id, ctx.meta.ip, async {
        let mut tx = ctx.begin(state).await?;
        let source = crate::audit::AuditSource::member(ctx.tenant_id, ctx.member_id, &ctx.meta);
        let right = match &proof {
            Proof::Code(code) => {
                spend_factor(&mut tx, state, &source, ctx.tenant_id, ctx.member_id, code)
                    .await?
                    .is_some()
            }
            Proof::Password(given) => {
                let hash = sqlx::query_scalar!(
                    "SELECT password_hash FROM member WHERE tenant_id = $1 AND id = $2",
                    ctx.tenant_id,
                    ctx.member_id
                )
                .fetch_one(&mut *tx)
                .await?;
                password::verify(
                    SecretString::from(given.expose_secret().to_owned()),
                    Some(hash),
                )
                .await?
            }
        };
        if right {
            clear(&mut tx, ctx.tenant_id, ctx.member_id, false).await?;
            ctx.audit(
                &mut tx,
                AuditEvent::new("auth.mfa.disabled", "member", ctx.member_id),
            )
            .await?;
        } else {
            record_failure(&mut tx, &source, ctx.member_id, "disable").await?;
        }
        tx.commit().await?;
        Ok(right.then_some(()))
    })
    .await?;
    done.ok_or_else(|| match proof {
        Proof::Code(_) => invalid_code(),
        Proof::Password(_) => Error::bad_request("invalid_credentials", "the password is wrong"),
    })
}

/// Forgets the member's authenticator and recovery codes; `reset` leaves a note of it.
async fn clear(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
    reset: bool,
) -> Result<()> {
    sqlx::query!(
        "UPDATE member_mfa SET sealed_secret = NULL, confirmed_at = NULL, last_step = NULL,
                reset_at = CASE WHEN $3 THEN now() END, updated_at = now()
         WHERE tenant_id = $1 AND member_id = $2",
        tenant_id,
        member_id,
        reset
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM mfa_recovery_code WHERE tenant_id = $1 AND member_id = $2",
        tenant_id,
        member_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An administrator's reset of a member's two-factor sign-in (a lost phone): the authenticator
/// and recovery codes are forgotten, the member's sessions end, and they enrol again at their
/// next sign-in if their role requires it. Audited; the member sees when it happened.
pub async fn reset(state: &AuthState, ctx: &Ctx, member_id: Uuid) -> Result<()> {
    let mut tx = ctx.begin(state).await?;
    let target = sqlx::query!(
        r#"SELECT m.role, (f.confirmed_at IS NOT NULL) AS "enabled!"
           FROM member m
           LEFT JOIN member_mfa f ON f.tenant_id = m.tenant_id AND f.member_id = m.id
           WHERE m.tenant_id = $1 AND m.id = $2"#,
        ctx.tenant_id,
        member_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let role = Role::parse(&target.role).ok_or(Error::NotFound)?;
    if !ctx.role.can_grant(role) {
        return Err(Error::Forbidden(
            "you cannot reset the two-factor sign-in of a member who outranks you",
        ));
    }
    if !target.enabled {
        return Err(not_enabled());
    }
    clear(&mut tx, ctx.tenant_id, member_id, true).await?;
    let revoked = session::revoke_all(&mut tx, ctx.tenant_id, member_id, None).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("auth.mfa.reset", "member", member_id)
            .after(json!({ "sessions_revoked": revoked })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_requirement(state: &AuthState, ctx: &Ctx, required: Requirement) -> Result<()> {
    let mut tx = ctx.begin(state).await?;
    let before = requirement(&mut tx, ctx.tenant_id).await?;
    sqlx::query!(
        "INSERT INTO mfa_policy (tenant_id, required) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET required = EXCLUDED.required, updated_at = now()",
        ctx.tenant_id,
        required.as_str()
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("auth.mfa.policy_changed", "tenant", ctx.tenant_id)
            .before(json!({ "required": before }))
            .after(json!({ "required": required })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Creating an API token hands out a lasting credential: a member with two-factor sign-in
/// must have proven it within the last minutes, from a browser session.
pub async fn require_recent_check(conn: &mut PgConnection, ctx: &Ctx) -> Result<()> {
    if !enabled(&mut *conn, ctx.tenant_id, ctx.member_id).await? {
        return Ok(());
    }
    let recent = match ctx.credential {
        Credential::Session(session_id) => sqlx::query_scalar!(
            r#"SELECT (mfa_verified_at > now() - make_interval(mins => $3)) IS TRUE AS "recent!"
               FROM session WHERE id = $1 AND tenant_id = $2"#,
            session_id,
            ctx.tenant_id,
            RECENT_CHECK_MINUTES
        )
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or(false),
        Credential::ApiToken(_) => false,
    };
    if recent {
        Ok(())
    } else {
        Err(Error::Refused {
            code: "mfa_check_required",
            message: format!(
                "creating an API token needs a two-factor check within the last \
                 {RECENT_CHECK_MINUTES} minutes: POST /api/v1/auth/mfa/verify from a browser session"
            ),
        })
    }
}

/// The answer of a password step when a code is owed.
pub struct Challenge {
    /// Goes back with the code; only its hash is kept.
    pub token: String,
    pub expires_at: OffsetDateTime,
}

/// Opens the second step of a sign-in whose password was right.
pub async fn open_challenge(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
) -> Result<Challenge> {
    // The member's old challenges go: only the newest may be answered.
    sqlx::query!(
        "DELETE FROM mfa_challenge WHERE tenant_id = $1 AND member_id = $2",
        tenant_id,
        member_id
    )
    .execute(&mut *conn)
    .await?;
    let token = format!(
        "mfa_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(super::token::random_bytes())
    );
    let expires_at = sqlx::query_scalar!(
        "INSERT INTO mfa_challenge (id, tenant_id, member_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         RETURNING expires_at",
        Uuid::now_v7(),
        tenant_id,
        member_id,
        super::token::sha256(token.as_bytes()),
        CHALLENGE_SECS as f64
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Challenge { token, expires_at })
}

/// A challenge being answered.
pub struct OpenChallenge {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub member_id: Uuid,
}

fn challenge_expired() -> Error {
    Error::Unauthenticated {
        code: "challenge_expired",
        message: "this sign-in has expired or was already completed: sign in again with your \
                  password"
            .into(),
    }
}

/// Finds a live challenge by its token, before any tenant is known (the owner pool).
pub async fn find_challenge(state: &AuthState, token: &str) -> Result<OpenChallenge> {
    let row = sqlx::query!(
        r#"SELECT c.id, c.tenant_id, c.member_id
           FROM mfa_challenge c
           JOIN member m ON m.tenant_id = c.tenant_id AND m.id = c.member_id
           WHERE c.token_hash = $1 AND c.used_at IS NULL AND c.expires_at > now()
             AND c.failures < $2 AND m.status = 'active'"#,
        super::token::sha256(token.trim().as_bytes()),
        CHALLENGE_MAX_FAILURES
    )
    .fetch_optional(&state.db.system)
    .await?
    .ok_or_else(challenge_expired)?;
    Ok(OpenChallenge {
        id: row.id,
        tenant_id: row.tenant_id,
        member_id: row.member_id,
    })
}

/// Takes the challenge for answering (locked until the transaction ends): gone, used, expired
/// or worn out by wrong codes meanwhile, it is refused.
pub async fn claim_challenge(conn: &mut PgConnection, challenge: &OpenChallenge) -> Result<()> {
    sqlx::query_scalar!(
        "SELECT id FROM mfa_challenge
         WHERE id = $1 AND tenant_id = $2 AND used_at IS NULL AND expires_at > now()
           AND failures < $3
         FOR UPDATE",
        challenge.id,
        challenge.tenant_id,
        CHALLENGE_MAX_FAILURES
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(challenge_expired)?;
    Ok(())
}

/// Settles a claimed challenge: used when the code was right, one failure nearer its end if not.
pub async fn settle_challenge(
    conn: &mut PgConnection,
    challenge: &OpenChallenge,
    right: bool,
) -> Result<()> {
    sqlx::query!(
        "UPDATE mfa_challenge
         SET used_at = CASE WHEN $3 THEN now() END,
             failures = failures + CASE WHEN $3 THEN 0 ELSE 1 END
         WHERE id = $1 AND tenant_id = $2",
        challenge.id,
        challenge.tenant_id,
        right
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The wrong-code answer of a sign-in's second step.
pub fn wrong_code() -> Error {
    Error::Unauthenticated {
        code: "invalid_code",
        message: "the code is wrong, expired or already used".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // proves: SEC-7
    #[test]
    fn a_code_is_accepted_one_step_either_side_and_not_further() {
        let secret = [7u8; SECRET_BYTES];
        let totp = totp(&secret, None);
        let now = 1_800_000_000;
        for (offset, expected) in [
            (-60i64, None),
            (-30, Some(-1i64)),
            (0, Some(0)),
            (30, Some(1)),
            (60, None),
        ] {
            let code = totp.generate((now as i64 + offset) as u64).to_string();
            let step = matching_step(&secret, &code, now);
            assert_eq!(
                step.map(|s| s as i64 - (now / STEP) as i64),
                expected,
                "offset {offset}"
            );
        }
        assert_eq!(matching_step(&secret, "12345", now), None);
        assert_eq!(matching_step(&secret, "abcdef", now), None);
    }

    #[test]
    fn recovery_codes_are_ten_distinct_and_typed_loosely() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(code.len(), 14);
        assert_eq!(
            normalise_recovery(&code.to_uppercase().replace('-', " ")),
            normalise_recovery(code)
        );
    }

    #[test]
    fn the_qr_code_is_an_svg_document() {
        let svg = qr_svg("otpauth://totp/Custodian:ana%40acme.example?secret=ABC&issuer=Custodian");
        assert!(svg.contains("<svg"), "{svg}");
    }
}
