//! The model's structured decision and how confident the platform is in it. The model is asked
//! for a JSON object (with a JSON-schema response format where the provider supports one); the
//! parser also accepts it wrapped in prose or a code fence, as local models like to do.
//! Confidence combines the model's own estimate, the mean token probability when logprobs come
//! back, and the best retrieval similarity, with tenant-configurable weights; missing inputs
//! drop out and the remaining weights are renormalised.

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
    #[serde(default)]
    pub arguments: Value,
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
pub fn parse(content: &str) -> Result<Decision, String> {
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
    Err(format!(
        "no decision object in the model's answer ({} characters)",
        content.len()
    ))
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
}

/// The inputs and the result, recorded in the execution audit.
#[derive(Debug, Clone, Serialize)]
pub struct Confidence {
    pub value: f64,
    pub self_reported: Option<f64>,
    /// exp(mean token logprob): the geometric mean probability of the answer's tokens.
    pub token_probability: Option<f64>,
    pub retrieval: Option<f64>,
    pub weights: Weights,
}

pub fn combine(
    self_reported: Option<f64>,
    logprobs: Option<&[f32]>,
    retrieval: Option<f64>,
    weights: Weights,
) -> Confidence {
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
        (retrieval.map(|x| x.clamp(0.0, 1.0)), weights.retrieval),
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
}
