pub mod graph;
pub mod oidc;
pub mod openai;
