//! The authenticated caller of one request. The guard (in `auth`, wired in by the composition)
//! resolves the credential to a [`Ctx`] and puts it in the request; handlers of every layer take
//! it from there. It lives in the foundation so that engines and domains alike can name the
//! caller without depending on how callers are authenticated.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use super::RequestMeta;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::rbac::Role;

#[derive(Debug, Clone)]
pub struct Ctx {
    pub tenant_id: Uuid,
    pub member_id: Uuid,
    pub role: Role,
    pub partner_org_id: Option<Uuid>,
    pub credential: Credential,
    pub meta: RequestMeta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session(Uuid),
    ApiToken(Uuid),
}

impl Ctx {
    /// A transaction pinned to the caller's tenant.
    pub async fn begin(&self, db: &impl AsRef<Db>) -> Result<Tx> {
        Ok(db.as_ref().tenant_tx(self.tenant_id).await?)
    }
}

impl AsRef<Db> for Db {
    fn as_ref(&self) -> &Db {
        self
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only the guard puts a Ctx here. A handler asking for one on a public route is a
        // programming error, and must fail closed.
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or(Error::Unauthorized)
    }
}
