//! Prompt templates are data (`prompts/`), compiled into the binary and checked when loaded:
//! a template may use only the variables declared for it, so a typo fails at start-up (the
//! router forces [`PROMPTS`] through [`warm_up`] when it is built), not in a customer's
//! conversation. Each run records the content hash of every template it used.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub struct Template {
    pub name: &'static str,
    text: &'static str,
    variables: &'static [&'static str],
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateUse {
    pub name: &'static str,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template}: unknown variable {{{{{variable}}}}}")]
    UnknownVariable {
        template: &'static str,
        variable: String,
    },
    #[error("template {template}: variable {variable} was not given")]
    Missing {
        template: &'static str,
        variable: &'static str,
    },
    #[error("template {template}: unclosed {{{{")]
    Unclosed { template: &'static str },
}

impl Template {
    pub fn new(
        name: &'static str,
        text: &'static str,
        variables: &'static [&'static str],
    ) -> Result<Self, TemplateError> {
        for used in placeholders(name, text)? {
            if !variables.contains(&used.as_str()) {
                return Err(TemplateError::UnknownVariable {
                    template: name,
                    variable: used,
                });
            }
        }
        Ok(Template {
            name,
            text,
            variables,
            hash: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// Fills every variable; each declared one must be given. One pass over the template:
    /// a value is copied as it is, so a value holding `{{knowledge}}` (a customer can type
    /// that) is never expanded.
    pub fn render(&self, values: &BTreeMap<&str, String>) -> Result<String, TemplateError> {
        for var in self.variables {
            if !values.contains_key(var) {
                return Err(TemplateError::Missing {
                    template: self.name,
                    variable: var,
                });
            }
        }
        let mut out = String::with_capacity(
            self.text.len() + values.values().map(String::len).sum::<usize>(),
        );
        let mut rest = self.text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            // `new` checked that every `{{` is closed and names a declared variable.
            let end = after.find("}}").ok_or(TemplateError::Unclosed {
                template: self.name,
            })?;
            let name = after[..end].trim();
            let value = values
                .get(name)
                .ok_or_else(|| TemplateError::UnknownVariable {
                    template: self.name,
                    variable: name.to_string(),
                })?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub fn usage(&self) -> TemplateUse {
        TemplateUse {
            name: self.name,
            sha256: self.hash.clone(),
        }
    }
}

fn placeholders(name: &'static str, text: &str) -> Result<Vec<String>, TemplateError> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unclosed { template: name })?;
        found.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    Ok(found)
}

pub struct Prompts {
    pub system: Template,
    /// The templates' fixed wording, which the outbound stage refuses to see repeated in a
    /// draft (with each run's canary).
    pub texts: std::sync::Arc<crate::guardrails::PromptTexts>,
    /// The JSON schema of the model's structured decision.
    pub decision_schema: serde_json::Value,
    pub decision_schema_hash: String,
}

impl Prompts {
    pub fn load() -> Result<Prompts, TemplateError> {
        let schema_text = include_str!("../../prompts/decision.schema.json");
        let system = include_str!("../../prompts/system.md");
        Ok(Prompts {
            system: Template::new(
                "system.md",
                system,
                &[
                    "tenant_name",
                    "customer_profile",
                    "knowledge",
                    "actions",
                    "canary",
                    "data_boundary",
                ],
            )?,
            texts: std::sync::Arc::new(crate::guardrails::PromptTexts::new(&[system])),
            decision_schema: serde_json::from_str(schema_text)
                .expect("prompts/decision.schema.json is JSON"),
            decision_schema_hash: hex::encode(Sha256::digest(schema_text.as_bytes())),
        })
    }
}

/// The built-in templates. Forced by [`warm_up`] when the router is built, so a broken template
/// stops the server at start-up rather than the first customer's run.
pub static PROMPTS: LazyLock<Prompts> = LazyLock::new(|| {
    Prompts::load().unwrap_or_else(|e| panic!("built-in prompt templates are invalid: {e}"))
});

/// Loads and checks the built-in templates now (panics, at start-up, when one is invalid).
pub fn warm_up() {
    LazyLock::force(&PROMPTS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_templates_load() {
        let prompts = Prompts::load().unwrap();
        assert_eq!(prompts.system.hash.len(), 64);
        assert_eq!(prompts.decision_schema["required"][0], "action");
    }

    #[test]
    fn an_unknown_variable_fails_at_load() {
        let err = Template::new("t", "Hello {{customer_nmae}}", &["customer_name"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("customer_nmae"));
        assert!(Template::new("t", "Hello {{oops", &["oops"]).is_err());
    }

    #[test]
    fn rendering_needs_every_declared_variable() {
        let t = Template::new("t", "Hi {{a}} and {{b}}", &["a", "b"]).unwrap();
        let mut values = BTreeMap::new();
        values.insert("a", "x".to_string());
        assert!(t.render(&values).is_err());
        values.insert("b", "y".to_string());
        assert_eq!(t.render(&values).unwrap(), "Hi x and y");
    }

    #[test]
    fn a_value_holding_a_placeholder_is_not_expanded() {
        let t = Template::new(
            "t",
            "Profile: {{profile}}\nPassages: {{knowledge}}",
            &["profile", "knowledge"],
        )
        .unwrap();
        let mut values = BTreeMap::new();
        values.insert(
            "profile",
            "name: {{knowledge}} {{ knowledge }} {{nope".to_string(),
        );
        values.insert("knowledge", "SECRET PASSAGES".to_string());
        let out = t.render(&values).unwrap();
        assert_eq!(
            out,
            "Profile: name: {{knowledge}} {{ knowledge }} {{nope\nPassages: SECRET PASSAGES"
        );
        assert_eq!(out.matches("SECRET PASSAGES").count(), 1);
    }

    #[test]
    fn the_same_variable_may_appear_twice_and_spacing_inside_braces_is_allowed() {
        let t = Template::new("t", "{{a}}-{{ a }}", &["a"]).unwrap();
        let values = BTreeMap::from([("a", "x".to_string())]);
        assert_eq!(t.render(&values).unwrap(), "x-x");
    }

    #[test]
    fn warming_up_loads_the_shipped_templates() {
        warm_up();
        assert_eq!(PROMPTS.system.hash.len(), 64);
    }
}
