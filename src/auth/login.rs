//! Signing in and out and changing one's password, whoever asks: the JSON API
//! (`routes.rs`) and the web app's forms call the same functions, so both are throttled
//! (SEC-5) and audited (AUD-2) alike.

use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use super::guard::{Credential, Ctx};
use super::member::{self, MemberView};
use super::session::{self, NewSession};
use super::{mfa, password, revocation, AuthState};
use crate::audit::{self, AuditEvent, AuditSource};
use crate::error::{Error, Result};
use crate::http::{RequestMeta, Rfc3339};

/// What a member signs in with.
pub struct Credentials<'a> {
    /// The tenant's slug: members belong to one tenant.
    pub tenant: &'a str,
    pub email: &'a str,
    pub password: SecretString,
}

/// A new session and whose it is.
pub struct SignedIn {
    pub session: NewSession,
    pub member: MemberView,
    pub tenant_id: Uuid,
}

/// What a right password leads to: a session, or, for a member with two-factor sign-in, the
/// second step ([`complete_sign_in`]) that owes a code.
pub enum SignInOutcome {
    SignedIn(SignedIn),
    CodeOwed(mfa::Challenge),
}

/// Checks the credentials and opens a session, or a challenge when the member has two-factor
/// sign-in. A wrong tenant, e-mail or password is [`Error::InvalidCredentials`] (which of them
/// is never said); an address that has spent its failures is refused with
/// [`Error::TooManyRequests`] before the password is looked at.
pub async fn sign_in(
    state: &AuthState,
    meta: &RequestMeta,
    credentials: Credentials<'_>,
) -> Result<SignInOutcome> {
    let tenant = credentials.tenant.trim();
    let email = credentials.email.trim();
    let account = format!("{tenant}\n{email}");
    // Refused here, before the password is looked at, when this address has spent its
    // failures for the account or across accounts.
    let mut attempt = state.throttle.login_attempt(&account, meta.ip)?;

    let found = sqlx::query!(
        r#"SELECT t.id AS tenant_id, m.id AS "member_id?", m.password_hash AS "password_hash?",
                  m.status AS "status?"
           FROM tenant t
           LEFT JOIN member m ON m.tenant_id = t.id AND lower(m.email) = lower($2)
           WHERE t.slug = $1"#,
        tenant,
        email
    )
    .fetch_optional(&state.db.system)
    .await?;
    if attempt.under_pressure() {
        // Others' failures slow the account down, but never for its member at an address they
        // sign in from. An unknown member of a known tenant is asked about too, so that the
        // question's cost does not tell which accounts exist.
        let familiar = match (&found, meta.ip) {
            (Some(f), Some(ip)) => {
                let member_id = f.member_id.unwrap_or(Uuid::nil());
                let mut tx = state.db.tenant_tx(f.tenant_id).await?;
                let familiar = session::signed_in_from(&mut tx, f.tenant_id, member_id, ip).await?;
                tx.commit().await?;
                familiar
            }
            _ => false,
        };
        if !familiar {
            attempt.wait_turn().await;
        }
    }
    let stored = found
        .as_ref()
        .filter(|f| f.status.as_deref() == Some("active"))
        .and_then(|f| f.password_hash.clone());
    let valid = password::verify(credentials.password, stored).await?;
    if valid {
        // Only failures spend the budgets: a member may log in as often as they like.
        attempt.succeeded();
    }

    let Some(found) = found else {
        return Err(Error::InvalidCredentials);
    };
    let mut tx = state.db.tenant_tx(found.tenant_id).await?;
    let source = AuditSource::anonymous(found.tenant_id, meta);
    match (valid, found.member_id) {
        (true, Some(member_id)) => {
            let source = AuditSource::member(found.tenant_id, member_id, meta);
            // Told only once the password is right, so the refusal reveals no account.
            if !super::oidc::password_allowed(&mut tx, found.tenant_id, member_id).await? {
                audit::record(
                    &mut tx,
                    &source,
                    AuditEvent::new("auth.login.failed", "member", member_id).after(json!({
                        "email": email,
                        "reason": "password_sign_in_disabled",
                    })),
                )
                .await?;
                tx.commit().await?;
                return Err(password_sign_in_disabled(tenant));
            }
            if mfa::enabled(&mut tx, found.tenant_id, member_id).await? {
                let challenge = mfa::open_challenge(&mut tx, found.tenant_id, member_id).await?;
                audit::record(
                    &mut tx,
                    &source,
                    AuditEvent::new("auth.login.code_owed", "member", member_id)
                        .after(json!({ "expires_at": challenge.expires_at.rfc3339() })),
                )
                .await?;
                tx.commit().await?;
                return Ok(SignInOutcome::CodeOwed(challenge));
            }
            let new = session::create(&mut tx, state, found.tenant_id, member_id, meta).await?;
            audit::record(
                &mut tx,
                &source,
                AuditEvent::new("auth.login.succeeded", "session", new.id).after(
                    json!({ "member_id": member_id, "expires_at": new.expires_at.rfc3339() }),
                ),
            )
            .await?;
            let member = member::fetch(&mut tx, member_id).await?;
            tx.commit().await?;
            Ok(SignInOutcome::SignedIn(SignedIn {
                session: new,
                member,
                tenant_id: found.tenant_id,
            }))
        }
        _ => {
            // The failure is recorded even though the login is refused.
            audit::record(
                &mut tx,
                &source,
                AuditEvent {
                    action: "auth.login.failed",
                    entity_type: "member",
                    entity_id: found.member_id.map(|id| id.to_string()),
                    before: None,
                    after: Some(json!({ "email": email })),
                    execution_id: None,
                },
            )
            .await?;
            tx.commit().await?;
            Err(Error::InvalidCredentials)
        }
    }
}

/// The refusal of a right password in a workspace that signs in through its identity provider.
pub fn password_sign_in_disabled(tenant: &str) -> Error {
    Error::Refused {
        code: "password_sign_in_disabled",
        message: format!(
            "this workspace signs in through its identity provider: use single sign-on \
             (/app/sso/{tenant}/start)"
        ),
    }
}

/// The second step of a sign-in: a code of the member's authenticator, or one of their
/// recovery codes, for the challenge the password step gave. Throttled per member and address
/// like passwords (SEC-5); a challenge also dies after a few wrong codes. Wrong codes are
/// audited (AUD-2) as `auth.mfa.failed`.
pub async fn complete_sign_in(
    state: &AuthState,
    meta: &RequestMeta,
    challenge: &str,
    code: &str,
) -> Result<SignedIn> {
    let challenge = mfa::find_challenge(state, challenge).await?;
    let (tenant_id, member_id) = (challenge.tenant_id, challenge.member_id);
    let signed_in = mfa::throttled(state, member_id, meta.ip, async {
        let mut tx = state.db.tenant_tx(tenant_id).await?;
        mfa::claim_challenge(&mut tx, &challenge).await?;
        let source = AuditSource::member(tenant_id, member_id, meta);
        let factor = mfa::spend_factor(&mut tx, state, &source, tenant_id, member_id, code).await?;
        mfa::settle_challenge(&mut tx, &challenge, factor.is_some()).await?;
        let Some(factor) = factor else {
            mfa::record_failure(&mut tx, &source, member_id, "sign_in").await?;
            tx.commit().await?;
            return Ok(None);
        };
        let new = session::create(&mut tx, state, tenant_id, member_id, meta).await?;
        mfa::mark_verified(&mut tx, tenant_id, new.id).await?;
        audit::record(
            &mut tx,
            &source,
            AuditEvent::new("auth.login.succeeded", "session", new.id).after(json!({
                "member_id": member_id,
                "expires_at": new.expires_at.rfc3339(),
                "second_factor": factor.as_str(),
            })),
        )
        .await?;
        let member = member::fetch(&mut tx, member_id).await?;
        tx.commit().await?;
        Ok(Some(SignedIn {
            session: new,
            member,
            tenant_id,
        }))
    })
    .await?;
    signed_in.ok_or_else(mfa::wrong_code)
}

/// Ends the caller's session and announces it, so that its open streams end too. Only a
/// browser session can be signed out; API tokens are revoked.
pub async fn sign_out(state: &AuthState, ctx: &Ctx) -> Result<()> {
    let Credential::Session(session_id) = ctx.credential else {
        return Err(Error::bad_request(
            "not_a_session",
            "API tokens are revoked with DELETE /api/v1/tokens/{token_id}",
        ));
    };
    let mut tx = ctx.begin(state).await?;
    sqlx::query!(
        "UPDATE session SET revoked_at = now()
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
        session_id,
        ctx.tenant_id
    )
    .execute(&mut *tx)
    .await?;
    revocation::announce(&mut tx, ctx.tenant_id, ctx.member_id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("auth.logout", "session", session_id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Changes the caller's password once the current one is proven, and signs out every other
/// session of theirs. Guessing the current password is throttled like a login.
pub async fn change_password(
    state: &AuthState,
    ctx: &Ctx,
    current_password: SecretString,
    new_password: SecretString,
) -> Result<()> {
    let Credential::Session(session_id) = ctx.credential else {
        return Err(Error::Forbidden(
            "passwords are changed from a browser session",
        ));
    };
    // Guessing the current password through a stolen session is throttled like a login.
    let mut attempt = state
        .throttle
        .login_attempt(&ctx.member_id.to_string(), ctx.meta.ip)?;
    if attempt.under_pressure() {
        // Only holders of the member's sessions fail here, so no address of theirs is spared.
        attempt.wait_turn().await;
    }
    let mut tx = ctx.begin(state).await?;
    let row = sqlx::query!(
        "SELECT email, password_hash FROM member WHERE id = $1 AND tenant_id = $2",
        ctx.member_id,
        ctx.tenant_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if !password::verify(current_password, Some(row.password_hash)).await? {
        return Err(Error::bad_request(
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    attempt.succeeded();
    password::check_policy(&new_password, &row.email)?;
    let hash = password::hash(new_password).await?;
    sqlx::query!(
        "UPDATE member SET password_hash = $3, password_changed_at = now(), updated_at = now()
         WHERE id = $1 AND tenant_id = $2",
        ctx.member_id,
        ctx.tenant_id,
        hash
    )
    .execute(&mut *tx)
    .await?;
    // Anyone else holding a session of this member is logged out.
    let revoked =
        session::revoke_all(&mut tx, ctx.tenant_id, ctx.member_id, Some(session_id)).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("auth.password_changed", "member", ctx.member_id)
            .after(json!({ "other_sessions_revoked": revoked })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
