//! The API of a tenant's single sign-on provider (`oidc.rs`): read, set and remove it. The
//! sign-in itself is a browser's journey (the web app's `/app/sso/…` pages).

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};

use super::guard::Ctx;
use super::oidc::{self, ProviderSettings, ProviderView};
use super::AuthState;
use crate::error::Result;
use crate::http::{Access, Api, Contract, Json};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/sso/oidc",
        Requires(Permission::TenantRead),
        (
            "sso",
            "The workspace's OpenID Connect provider (its client secret is never answered)",
        ),
        Contract::new()
            .ok::<ProviderView>()
            .error(StatusCode::NOT_FOUND, "not_found"),
        show,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/sso/oidc",
        Requires(Permission::TenantManage),
        (
            "sso",
            "Set the workspace's OpenID Connect provider: issuer, client, allowed e-mail \
             domains, who may join, and whether passwords still sign in",
        ),
        Contract::new()
            .body::<ProviderSettings>()
            .ok::<ProviderView>()
            .error(StatusCode::BAD_REQUEST, "invalid_issuer")
            .error(StatusCode::BAD_REQUEST, "invalid_client_id")
            .error(StatusCode::BAD_REQUEST, "invalid_client_secret")
            .error(StatusCode::BAD_REQUEST, "invalid_domain")
            .error(StatusCode::CONFLICT, "client_secret_required"),
        save,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/sso/oidc",
        Requires(Permission::TenantManage),
        (
            "sso",
            "Remove the workspace's OpenID Connect provider; members sign in with passwords",
        ),
        Contract::new()
            .no_content()
            .error(StatusCode::NOT_FOUND, "not_found"),
        remove,
    )
}

async fn show(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<ProviderView>> {
    Ok(Json(oidc::show(&state, &ctx).await?))
}

async fn save(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<ProviderSettings>,
) -> Result<Json<ProviderView>> {
    Ok(Json(oidc::save(&state, &ctx, body).await?))
}

async fn remove(State(state): State<AuthState>, ctx: Ctx) -> Result<StatusCode> {
    oidc::remove(&state, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}
