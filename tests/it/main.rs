//! Integration tests: the real router against real PostgreSQL, one fresh database per test.
//! Tests that prove a promise of PROMISES.md say so with `// proves: ID`.

mod access;
mod agent;
mod agent_knowledge;
mod agent_provider;
mod agent_record;
mod agent_runs;
mod agent_tools;
mod architecture;
mod audit_api;
mod audit_chain;
mod auth;
mod common;
mod egress;
mod embedded_pg;
mod fakes;
mod guardrail_config;
mod http_basics;
mod inbox;
mod isolation;
mod provider;
mod queue;
mod retention;
mod reviews;
mod run_command;
mod sec_content_type;
mod sec_invitations;
mod sec_legal_hold;
mod sec_login;
mod sec_secrets;
mod sec_streams;
mod sec_whatsapp;
mod webchat;
mod whatsapp;
mod whatsapp_client;
mod whatsapp_payload;
