//! Browser sessions: a signed random token in an HttpOnly, Secure, SameSite=Strict cookie,
//! stored hashed, expiring within 30 days, revocable at once (SEC-6).

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderValue;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AuthState;
use crate::error::Result;
use crate::http::RequestMeta;

pub const COOKIE: &str = crate::http::SESSION_COOKIE;

pub struct NewSession {
    pub id: Uuid,
    pub expires_at: OffsetDateTime,
    /// The `Set-Cookie` value carrying the token; the only place the token ever appears.
    pub cookie: HeaderValue,
}

pub async fn create(
    conn: &mut PgConnection,
    state: &AuthState,
    tenant_id: Uuid,
    member_id: Uuid,
    meta: &RequestMeta,
) -> Result<NewSession> {
    let token = state.keys.new_session_token();
    let hash = state
        .keys
        .session_token_hash(&token)
        .expect("a fresh token verifies");
    let ttl = state.config.session_ttl.as_secs();
    let row = sqlx::query!(
        r#"INSERT INTO session (id, tenant_id, member_id, token_hash, expires_at, ip, user_agent)
           VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7)
           RETURNING id, expires_at"#,
        Uuid::now_v7(),
        tenant_id,
        member_id,
        hash,
        ttl as f64,
        meta.ip.map(|ip| ip.to_string()),
        meta.user_agent,
    )
    .fetch_one(&mut *conn)
    .await?;
    let cookie =
        format!("{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={ttl}");
    Ok(NewSession {
        id: row.id,
        expires_at: row.expires_at,
        cookie: HeaderValue::from_str(&cookie).expect("token is base64url"),
    })
}

/// Whether the member signed in from `ip` in the last 90 days (a session's address; for IPv6
/// its /64, since devices there rotate the rest of the address every day or so). Such an
/// address is let past the slow-down that others' failed guesses put on the account.
pub async fn signed_in_from(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
    ip: IpAddr,
) -> Result<bool> {
    let network = match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!(
            "{}/64",
            Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))
        ),
    };
    // Sessions store the address as text written from an `IpAddr`, so the cast cannot fail.
    let familiar = sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM session
               WHERE tenant_id = $1 AND member_id = $2
                 AND created_at > now() - interval '90 days'
                 AND ip::inet <<= $3::text::inet
           ) AS "familiar!""#,
        tenant_id,
        member_id,
        network
    )
    .fetch_one(conn)
    .await?;
    Ok(familiar)
}

/// The `Set-Cookie` value that removes the session cookie from the browser.
pub fn clearing_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "custodian_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
    )
}

/// Revokes every live session of a member except `keep`, and announces it so that their open
/// streams end; returns how many.
pub async fn revoke_all(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
    keep: Option<Uuid>,
) -> Result<u64> {
    let done = sqlx::query!(
        "UPDATE session SET revoked_at = now()
         WHERE tenant_id = $1 AND member_id = $2 AND revoked_at IS NULL
           AND id IS DISTINCT FROM $3",
        tenant_id,
        member_id,
        keep
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        super::revocation::announce(conn, tenant_id, member_id).await?;
    }
    Ok(done.rows_affected())
}
