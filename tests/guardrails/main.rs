//! Integration tests of the guardrail engine: one test binary, one module
//! per concern. Tests that prove a platform promise say so in a
//! `// proves:` comment (see shared/PROMISES.md).

// The corpus generator is test support (tests/support/corpus.rs), kept out of the crate.
#[path = "../support/corpus.rs"]
mod corpus;

mod detectors;
mod independent;
mod language;
mod leaks;
mod linear;
mod links;
mod masking;
mod packs;
#[path = "../support/pii_eval.rs"]
mod pii_eval;
mod policy;
mod properties;
mod quality;
mod regressions;
mod scan;
mod verdicts;
