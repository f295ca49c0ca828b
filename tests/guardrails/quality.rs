//! The quality targets of the issue, asserted on a fixed-seed generated
//! corpus (a test, not a timing). `cargo run --release --example
//! guardrail_corpus` prints the same table for any seed and size.

use crate::corpus::{generate, score, Category};
use custodian::guardrails::Policy;

#[test]
fn the_detectors_meet_the_quality_targets_on_the_fixed_seed_corpus() {
    let samples = generate(2024, 12_000);
    let report = score(&samples, &Policy::builtin());
    println!("{report}");
    for (category, row) in &report.rows {
        if category.is_structured() {
            assert!(
                row.fully_masked_rate() >= 0.99,
                "{category:?} fully masked {:.4}",
                row.fully_masked_rate()
            );
            assert!(
                row.precision() >= 0.95,
                "{category:?} precision {:.4}",
                row.precision()
            );
        }
        if category.pii_type().is_none() {
            // Distractors: order numbers, dates, amounts, tracking and ZIP codes.
            assert!(
                row.found * 100 <= row.labelled,
                "{category:?} masked {} of {}",
                row.found,
                row.labelled
            );
        }
    }
    let crm = &report.rows[&Category::NameCrm];
    assert_eq!(
        (crm.recall(), crm.fully_masked_rate()),
        (1.0, 1.0),
        "CRM names"
    );
    assert!(
        report.rows[&Category::NameIntro].recall() >= 0.90,
        "self-introduced names"
    );
    for c in [
        Category::Email,
        Category::Phone,
        Category::Card,
        Category::Iban,
        Category::Cpf,
        Category::Cnpj,
        Category::NameIntro,
    ] {
        assert!(report.rows[&c].labelled >= 300, "{c:?} under-sampled");
    }
}
