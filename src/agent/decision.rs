//! The model's structured decision and how confident the platform is in it. The model is asked
//! for a JSON object (with a JSON-schema response format where the provider supports one); the
//! parser also accepts it wrapped in prose or a code fence, as local models like to do.
//! Confidence combines the model's own estimate, the mean token probability when logprobs come
//! back, and the best retrieval similarity, with tenant-configurable weights; missing inputs
//! drop out and the remaining weights are renormalised. Similarity enters the formula as
//! `min(1, similarity × retrieval_scale)`: cosine similarities of a lexical embedder run lower
//! than a neural model's for the same match, so the scale (a tenant setting, by default 2 for
//! the built-in embedder and 1 for a provider's) says how much similarity counts as certain.
//! The record keeps the raw similarity and the scale, so the value can be recomputed.
//!
//! The schema (`prompts/decision.schema.json`) is valid for OpenAI's strict structured outputs:
//! an action's arguments are a JSON object *encoded as a string*, since strict mode allows no
//! free-form object. The parser takes them either way (servers in `json_object` mode, or
//! without structured outputs at all, tend to send an object).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Reply,
    Handoff,
    RequestAction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRequest {
    pub name: String,
    /// A JSON object; sent by the model as one, or as a string holding one.
    #[serde(default, deserialize_with = "arguments")]
    pub arguments: Value,
}

/// An object as it is, a string holding JSON as what it holds, anything else as it is (the
/// action's schema refuses what is not an object).
fn arguments<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match value {
        Value::String(text) if text.trim().is_empty() => Value::Object(Default::default()),
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        other => other,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    #[serde(default)]
    pub reply: String,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub reason_code: String,
    #[serde(default)]
    pub cited_sources: Vec<String>,
    #[serde(default)]
    pub action_request: Option<ActionRequest>,
}

/// Parses a decision from the model's content: the whole text as JSON, else the first balanced
/// `{…}` object inside it.
pub fn parse(content: &str) -> Result<Decision, NoDecision> {
    let trimmed = content.trim();
    if let Ok(d) = serde_json::from_str::<Decision>(trimmed) {
        return Ok(sane(d));
    }
    let mut start = None;
    let mut depth = 0i32;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in trimmed.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => {
                if depth == 0 {
                    start = Some(i);
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    if let Some(s) = start {
                        if let Ok(d) = serde_json::from_str::<Decision>(&trimmed[s..=i]) {
                            return Ok(sane(d));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Err(NoDecision {
        chars: content.len(),
    })
}

/// The model's answer held no decision object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no decision object in the model's answer ({chars} characters)")]
pub struct NoDecision {
    /// The answer's length in bytes (what the message has always called characters).
    pub chars: usize,
}

fn sane(mut d: Decision) -> Decision {
    if !d.confidence.is_finite() {
        d.confidence = 0.0;
    }
    d.confidence = d.confidence.clamp(0.0, 1.0);
    d
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Weights {
    pub self_reported: f64,
    pub logprob: f64,
    pub retrieval: f64,
    /// Similarity × this, capped at 1, is the retrieval input's certainty.
    pub retrieval_scale: f64,
}

/// The inputs and the result, recorded in the execution audit.
#[derive(Debug, Clone, Serialize)]
pub struct Confidence {
    pub value: f64,
    pub self_reported: Option<f64>,
    /// exp(mean token logprob): the geometric mean probability of the answer's tokens.
    pub token_probability: Option<f64>,
    /// The best retrieval similarity, raw (cosine).
    pub retrieval: Option<f64>,
    /// What the similarity counted for: `min(1, retrieval × retrieval_scale)`.
    pub retrieval_certainty: Option<f64>,
    pub weights: Weights,
}

pub fn combine(
    self_reported: Option<f64>,
    logprobs: Option<&[f32]>,
    retrieval: Option<f64>,
    weights: Weights,
) -> Confidence {
    let retrieval_certainty = retrieval
        .filter(|x| x.is_finite())
        .map(|x| (x * weights.retrieval_scale).clamp(0.0, 1.0));
    let token_probability = logprobs.filter(|l| !l.is_empty()).map(|l| {
        (l.iter().map(|x| f64::from(*x)).sum::<f64>() / l.len() as f64)
            .exp()
            .clamp(0.0, 1.0)
    });
    let parts = [
        (
            self_reported.map(|x| x.clamp(0.0, 1.0)),
            weights.self_reported,
        ),
        (token_probability, weights.logprob),
        (retrieval_certainty, weights.retrieval),
    ];
    let (sum, total) = parts
        .iter()
        .filter_map(|(value, weight)| value.map(|v| (v * weight, *weight)))
        .fold((0.0, 0.0), |(s, t), (vw, w)| (s + vw, t + w));
    let value = if total > 0.0 { sum / total } else { 0.0 };
    Confidence {
        value,
        self_reported,
        token_probability,
        retrieval,
        retrieval_certainty,
        weights,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Weights = Weights {
        self_reported: 0.4,
        logprob: 0.2,
        retrieval: 0.4,
        retrieval_scale: 1.0,
    };

    #[test]
    fn a_decision_is_found_inside_prose_and_code_fences() {
        let text = "Sure! Here you go:\n```json\n{\"action\":\"reply\",\"reply\":\"We ship in {2} days\",\"confidence\":0.9,\"reason_code\":\"answered\",\"cited_sources\":[\"c1\"],\"action_request\":null}\n```";
        let d = parse(text).unwrap();
        assert_eq!(d.action, Action::Reply);
        assert_eq!(d.reply, "We ship in {2} days");
        assert!(parse("I cannot answer that.").is_err());
        assert!(parse("{\"action\":\"dance\"}").is_err());
    }

    #[test]
    fn confidence_is_clamped_and_weights_renormalise_over_present_inputs() {
        let d = parse("{\"action\":\"reply\",\"reply\":\"x\",\"confidence\":7}").unwrap();
        assert_eq!(d.confidence, 1.0);
        let only_self = combine(Some(0.8), None, None, W);
        assert!((only_self.value - 0.8).abs() < 1e-9);
        let both = combine(Some(1.0), None, Some(0.5), W);
        assert!((both.value - 0.75).abs() < 1e-9);
        let certain_tokens = combine(None, Some(&[0.0, 0.0]), None, W);
        assert!((certain_tokens.value - 1.0).abs() < 1e-9);
        assert_eq!(combine(None, None, None, W).value, 0.0);
    }

    #[test]
    fn the_raw_similarity_is_recorded_and_the_scale_maps_it() {
        let scaled = Weights {
            retrieval_scale: 2.0,
            ..W
        };
        let c = combine(None, None, Some(0.3), scaled);
        assert_eq!(c.retrieval, Some(0.3));
        assert!((c.retrieval_certainty.unwrap() - 0.6).abs() < 1e-9);
        assert!((c.value - 0.6).abs() < 1e-9);
        assert_eq!(
            combine(None, None, Some(0.8), scaled).retrieval_certainty,
            Some(1.0)
        );
        assert_eq!(
            combine(None, None, Some(0.3), W).retrieval_certainty,
            Some(0.3)
        );
    }

    #[test]
    fn action_arguments_are_read_from_a_json_string_or_an_object() {
        let encoded = parse(r#"{"action":"request_action","reply":"","confidence":0.9,"reason_code":"action_needed","cited_sources":[],"action_request":{"name":"issue_refund","arguments":"{\"order_id\":\"A-1\",\"amount\":5}"}}"#).unwrap();
        let request = encoded.action_request.unwrap();
        assert_eq!(
            request.arguments,
            serde_json::json!({ "order_id": "A-1", "amount": 5 })
        );
        let object = parse(
            r#"{"action":"request_action","action_request":{"name":"x","arguments":{"a":1}}}"#,
        )
        .unwrap();
        assert_eq!(
            object.action_request.unwrap().arguments,
            serde_json::json!({ "a": 1 })
        );
        let garbage = parse(
            r#"{"action":"request_action","action_request":{"name":"x","arguments":"not json"}}"#,
        )
        .unwrap();
        assert_eq!(
            garbage.action_request.unwrap().arguments,
            serde_json::json!("not json")
        );
    }

    /// OpenAI refuses a `strict` json_schema unless every object forbids additional properties
    /// and requires all of its properties; keywords outside the subset every provider with
    /// structured outputs accepts (numeric and length bounds, formats, patterns) are refused
    /// or ignored by some. The code would then fall back to `json_object` silently.
    fn check_strict(schema: &Value, path: &str, problems: &mut Vec<String>) {
        let Some(object) = schema.as_object() else {
            problems.push(format!("{path}: a schema must be an object"));
            return;
        };
        for keyword in [
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
            "minLength",
            "maxLength",
            "pattern",
            "format",
            "minItems",
            "maxItems",
            "uniqueItems",
            "minProperties",
            "maxProperties",
            "patternProperties",
            "default",
            "oneOf",
            "allOf",
            "not",
            "if",
            "then",
            "else",
        ] {
            if object.contains_key(keyword) {
                problems.push(format!("{path}: `{keyword}` is outside the strict subset"));
            }
        }
        let types: Vec<&str> = match object.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => {
                if !object.contains_key("anyOf") && !object.contains_key("enum") {
                    problems.push(format!("{path}: no type"));
                }
                vec![]
            }
        };
        if types.contains(&"object") {
            if object.get("additionalProperties") != Some(&Value::Bool(false)) {
                problems.push(format!("{path}: additionalProperties must be false"));
            }
            let properties = object.get("properties").and_then(Value::as_object);
            let required: Vec<&str> = object
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match properties {
                None => problems.push(format!("{path}: an object needs its properties listed")),
                Some(properties) => {
                    for (name, property) in properties {
                        if !required.contains(&name.as_str()) {
                            problems.push(format!("{path}.{name}: not in required"));
                        }
                        check_strict(property, &format!("{path}.{name}"), problems);
                    }
                    for name in &required {
                        if !properties.contains_key(*name) {
                            problems.push(format!("{path}: required {name} is not a property"));
                        }
                    }
                }
            }
        }
        if types.contains(&"array") {
            match object.get("items") {
                Some(items) => check_strict(items, &format!("{path}[]"), problems),
                None => problems.push(format!("{path}: an array needs items")),
            }
        }
        for (i, branch) in object
            .get("anyOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_strict(branch, &format!("{path}|{i}"), problems);
        }
    }

    #[test]
    fn the_decision_schema_is_valid_for_openai_strict_structured_outputs() {
        let schema: Value =
            serde_json::from_str(include_str!("../../prompts/decision.schema.json")).unwrap();
        let mut problems = Vec::new();
        check_strict(&schema, "$", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");

        // The checker is not vacuous: the old shape of the schema fails it.
        let mut old = schema.clone();
        old["properties"]["action_request"]["properties"]["arguments"] =
            serde_json::json!({ "type": "object" });
        old["properties"]["confidence"]["minimum"] = serde_json::json!(0);
        let mut problems = Vec::new();
        check_strict(&old, "$", &mut problems);
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }
}
