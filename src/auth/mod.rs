//! Authentication: passwords, sessions, API tokens, throttles and the route guard.

pub mod guard;
pub mod member;
pub mod password;
pub mod revocation;
pub mod routes;
pub mod session;
pub mod token;

pub use guard::{Credential, Ctx};
