//! Authentication: passwords, sessions, API tokens, throttles and the route guard.

pub mod guard;
pub mod login;
pub mod member;
pub mod mfa;
pub mod mfa_routes;
pub mod oidc;
pub mod oidc_routes;
pub mod password;
pub mod revocation;
pub mod routes;
pub mod session;
pub mod token;

pub use guard::{Credential, Ctx};

use std::sync::Arc;

use crate::config::Config;
use crate::crypto::Sealer;
use crate::db::Db;

/// What authentication needs of the process: the database, the session keys, the throttles and
/// the configuration (session lifetime) and the sealer of second-factor secrets. Cheap to clone; the domains above take it to sign
/// members in.
#[derive(Clone)]
pub struct AuthState {
    pub config: Arc<Config>,
    pub db: Db,
    pub keys: Arc<token::Keys>,
    pub throttle: Arc<guard::Throttle>,
    /// Seals the members' second-factor secrets at rest (SEC-10).
    pub sealer: Arc<Sealer>,
    /// Single sign-on's HTTP client and the providers' discovery documents and keys.
    pub oidc: Arc<oidc::Oidc>,
}

impl AsRef<Db> for AuthState {
    fn as_ref(&self) -> &Db {
        &self.db
    }
}
