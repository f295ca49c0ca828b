//! Custodian: a governance-first customer-success platform. Every promise in
//! `PROMISES.md` is enforced here and proven by a test that names it.

pub mod agent;
pub mod app;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod config;
pub mod conversations;
pub mod crm;
pub mod crypto;
pub mod cs;
pub mod db;
pub mod error;
pub mod events;
pub mod guardrails;
pub mod http;
pub mod knowledge;
pub mod privacy;
pub mod queue;
pub mod rbac;
pub mod retention;
pub mod reviews;
pub mod server;
pub mod tenants;
pub mod web;

pub use app::{router, AppState};
pub use error::{Error, Result};
