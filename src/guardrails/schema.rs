//! Tool-call arguments checked against the tool's JSON schema, and the schema itself checked
//! when a tenant saves an action. Pure and bounded (depth, pattern size, a regex engine that
//! does not backtrack): arguments come from a model, and schemas from tenants, so neither may
//! make a check expensive. The agent checks a call before it runs a tool; a reviewer's edit of
//! an action's arguments is checked the same way before it is approved.

use serde_json::{json, Value};

/// How deep a schema or an argument may nest before validation gives up on it.
const MAX_DEPTH: usize = 32;
/// Patterns are compiled with bounded size: a schema cannot make validation expensive (the
/// `regex` crate does not backtrack, so matching is linear too).
const MAX_PATTERN_CHARS: usize = 1000;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

crate::error::message_error! {
    /// Why a schema or the arguments it checks are refused: the message says what to fix.
    pub struct SchemaError;
}

fn pattern(source: &str) -> std::result::Result<regex::Regex, SchemaError> {
    if source.chars().count() > MAX_PATTERN_CHARS {
        return Err(format!("a pattern is limited to {MAX_PATTERN_CHARS} characters").into());
    }
    regex::RegexBuilder::new(source)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|_| SchemaError::from("a pattern is not a supported regular expression"))
}

/// Checks a tenant's parameter schema when the action is saved: an object schema whose
/// keywords validation understands have the right shapes, and whose patterns compile.
pub fn check_schema(schema: &Value) -> std::result::Result<(), SchemaError> {
    if schema.get("type") != Some(&json!("object")) {
        return Err("parameters must be a JSON schema of type object".into());
    }
    check_schema_node(schema, "parameters", 0)
}

fn check_schema_node(
    schema: &Value,
    path: &str,
    depth: usize,
) -> std::result::Result<(), SchemaError> {
    if depth > MAX_DEPTH {
        return Err(format!("{path} nests too deeply").into());
    }
    let Some(node) = schema.as_object() else {
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{path} must be a schema object").into()),
        };
    };
    if let Some(t) = node.get("type") {
        let ok = match t {
            Value::String(t) => TYPES.contains(&t.as_str()),
            Value::Array(ts) => ts
                .iter()
                .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
            _ => false,
        };
        if !ok {
            return Err(format!("{path}.type names an unknown type").into());
        }
    }
    for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] {
        if node.get(key).is_some_and(|v| !v.is_number()) {
            return Err(format!("{path}.{key} must be a number").into());
        }
    }
    for key in ["minLength", "maxLength", "minItems", "maxItems"] {
        if node.get(key).is_some_and(|v| !v.is_u64()) {
            return Err(format!("{path}.{key} must be a non-negative integer").into());
        }
    }
    if node.get("enum").is_some_and(|v| !v.is_array()) {
        return Err(format!("{path}.enum must be an array").into());
    }
    if let Some(required) = node.get("required") {
        if !required
            .as_array()
            .is_some_and(|r| r.iter().all(Value::is_string))
        {
            return Err(format!("{path}.required must be an array of names").into());
        }
    }
    if let Some(p) = node.get("pattern") {
        let p = p
            .as_str()
            .ok_or(format!("{path}.pattern must be a string"))?;
        pattern(p).map_err(|e| format!("{path}.pattern: {e}"))?;
    }
    if let Some(properties) = node.get("properties") {
        let properties = properties
            .as_object()
            .ok_or(format!("{path}.properties must be an object"))?;
        for (name, property) in properties {
            check_schema_node(property, &format!("{path}.{name}"), depth + 1)?;
        }
    }
    if let Some(extra) = node.get("additionalProperties") {
        check_schema_node(extra, &format!("{path}.additionalProperties"), depth + 1)?;
    }
    if let Some(items) = node.get("items") {
        check_schema_node(items, &format!("{path}[]"), depth + 1)?;
    }
    Ok(())
}

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Checks arguments against a tool's JSON schema: `type` (one or several), `enum`, `const`,
/// `required`, `properties` and `additionalProperties` (false or a schema), `items`,
/// `minItems`/`maxItems`, `minLength`/`maxLength` (in characters), `pattern` (bounded, see
/// [`pattern`]), `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`, nested to any
/// depth up to [`MAX_DEPTH`]. Keywords outside this subset are ignored. Messages name the
/// path and the rule broken, never the value (they go back to the model).
pub fn validate(schema: &Value, args: &Value) -> std::result::Result<(), SchemaError> {
    if !args.is_object() {
        return Err("arguments must be a JSON object".into());
    }
    check(schema, args, "arguments", 0)
}

fn type_matches(t: &str, value: &Value) -> bool {
    match t {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64()
                || value.is_u64()
                || value
                    .as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check(
    schema: &Value,
    value: &Value,
    path: &str,
    depth: usize,
) -> std::result::Result<(), SchemaError> {
    if depth > MAX_DEPTH {
        return Err(format!("{path} nests too deeply").into());
    }
    let node = match schema {
        Value::Bool(false) => return Err(format!("{path} is not allowed").into()),
        Value::Object(node) => node,
        _ => return Ok(()),
    };
    if let Some(t) = node.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
            return Err(format!(
                "{path} has the wrong type (expected {})",
                types.join(" or ")
            )
            .into());
        }
    }
    if let Some(allowed) = node.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{path} is not one of the allowed values").into());
        }
    }
    if node.get("const").is_some_and(|c| c != value) {
        return Err(format!("{path} is not the required value").into());
    }
    let bound = |key: &str| node.get(key).and_then(Value::as_f64);
    let count = |key: &str| node.get(key).and_then(Value::as_u64);
    match value {
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if count("minLength").is_some_and(|min| chars < min) {
                return Err(format!("{path} is too short").into());
            }
            if count("maxLength").is_some_and(|max| chars > max) {
                return Err(format!("{path} is too long").into());
            }
            if let Some(p) = node.get("pattern").and_then(Value::as_str) {
                let re = pattern(p).map_err(|e| format!("{path}: {e}"))?;
                if !re.is_match(text) {
                    return Err(format!("{path} does not match the required pattern").into());
                }
            }
        }
        Value::Number(n) => {
            // JSON numbers are finite: every comparison below is a plain one.
            let x = n.as_f64().unwrap_or_default();
            if bound("minimum").is_some_and(|min| x < min) {
                return Err(format!("{path} is below the minimum").into());
            }
            if bound("maximum").is_some_and(|max| x > max) {
                return Err(format!("{path} is above the maximum").into());
            }
            if bound("exclusiveMinimum").is_some_and(|min| x <= min) {
                return Err(format!("{path} must be greater than its minimum").into());
            }
            if bound("exclusiveMaximum").is_some_and(|max| x >= max) {
                return Err(format!("{path} must be less than its maximum").into());
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if count("minItems").is_some_and(|min| n < min) {
                return Err(format!("{path} has too few items").into());
            }
            if count("maxItems").is_some_and(|max| n > max) {
                return Err(format!("{path} has too many items").into());
            }
            if let Some(item_schema) = node.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), depth + 1)?;
                }
            }
        }
        Value::Object(object) => {
            let properties = node.get("properties").and_then(Value::as_object);
            for required in node
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(required) {
                    return Err(format!("missing required argument {path}.{required}").into());
                }
            }
            for (name, item) in object {
                let child = format!("{path}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => check(property, item, &child, depth + 1)?,
                    None => match node.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(format!("unknown argument {child}").into());
                        }
                        Some(extra) => check(extra, item, &child, depth + 1)?,
                        None => {}
                    },
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_against_the_tools_schema() {
        let schema = json!({ "type": "object", "required": ["order_id", "amount"], "additionalProperties": false,
            "properties": { "order_id": { "type": "string" }, "amount": { "type": "number" }, "reason": { "type": "string", "enum": ["damaged", "late"] } } });
        assert!(validate(&schema, &json!({ "order_id": "A1", "amount": 20.5 })).is_ok());
        assert!(validate(&schema, &json!({ "order_id": "A1" }))
            .unwrap_err()
            .to_string()
            .contains("amount"));
        assert!(validate(&schema, &json!({ "order_id": 7, "amount": 1 }))
            .unwrap_err()
            .to_string()
            .contains("order_id"));
        assert!(
            validate(&schema, &json!({ "order_id": "A1", "amount": 1, "x": 1 }))
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
        assert!(validate(
            &schema,
            &json!({ "order_id": "A1", "amount": 1, "reason": "bored" })
        )
        .is_err());
        assert!(validate(&schema, &json!("not an object")).is_err());
    }

    #[test]
    fn nested_objects_arrays_and_bounds_are_checked() {
        let schema = json!({ "type": "object", "required": ["order"], "additionalProperties": false, "properties": {
            "order": { "type": "object", "required": ["id", "lines"], "additionalProperties": false, "properties": {
                "id": { "type": "string", "pattern": "^A-[0-9]{3,6}$", "minLength": 5, "maxLength": 8 },
                "lines": { "type": "array", "minItems": 1, "maxItems": 3, "items": {
                    "type": "object", "required": ["sku", "qty"], "properties": {
                        "sku": { "type": "string" },
                        "qty": { "type": "integer", "minimum": 1, "maximum": 10 } } } } } },
            "amount": { "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 500 },
            "channel": { "type": ["string", "null"], "enum": ["email", "phone", null] } } });
        let good = json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 2 }] }, "amount": 20.5, "channel": null });
        assert_eq!(validate(&schema, &good), Ok(()));
        for (bad, says) in [
            (
                json!({ "order": { "id": "B-1001", "lines": [{ "sku": "X", "qty": 2 }] } }),
                "arguments.order.id does not match",
            ),
            (
                json!({ "order": { "id": "A-10", "lines": [{ "sku": "X", "qty": 2 }] } }),
                "arguments.order.id is too short",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [] } }),
                "arguments.order.lines has too few items",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 2 }, { "sku": "Y", "qty": 1 }, { "sku": "Z", "qty": 1 }, { "sku": "W", "qty": 1 }] } }),
                "too many items",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 11 }] } }),
                "arguments.order.lines[0].qty is above the maximum",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 0 }] } }),
                "below the minimum",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 1.5 }] } }),
                "qty has the wrong type",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X" }] } }),
                "missing required argument arguments.order.lines[0].qty",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 1 }], "note": "x" } }),
                "unknown argument arguments.order.note",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 1 }] }, "amount": 0 }),
                "greater than",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 1 }] }, "amount": 500 }),
                "less than",
            ),
            (
                json!({ "order": { "id": "A-1001", "lines": [{ "sku": "X", "qty": 1 }] }, "channel": "fax" }),
                "not one of the allowed values",
            ),
            (
                json!({ "order": "A-1001" }),
                "arguments.order has the wrong type",
            ),
        ] {
            let problem = validate(&schema, &bad).unwrap_err().to_string();
            assert!(problem.contains(says), "{bad}: {problem}");
        }
        // Integral floats are integers, as JSON Schema says.
        let qty = json!({ "type": "object", "properties": { "qty": { "type": "integer" } } });
        assert!(validate(&qty, &json!({ "qty": 2.0 })).is_ok());
        // A message never quotes the value (it goes back to the model).
        let secret = validate(
            &schema,
            &json!({ "order": { "id": "maria@example.com", "lines": [] } }),
        )
        .unwrap_err()
        .to_string();
        assert!(!secret.contains("maria"), "{secret}");
    }

    #[test]
    fn a_schema_is_checked_when_an_action_is_saved() {
        assert!(check_schema(&json!({ "type": "object", "properties": { "id": { "type": "string", "pattern": "^[A-Z]+$" } } })).is_ok());
        for bad in [
            json!({ "type": "string" }),
            json!({ "type": "object", "properties": { "id": { "type": "text" } } }),
            json!({ "type": "object", "properties": { "id": { "type": "string", "pattern": "(?<=a)b" } } }),
            json!({ "type": "object", "properties": { "id": { "type": "string", "pattern": "a{1000}{1000}" } } }),
            json!({ "type": "object", "properties": { "n": { "type": "number", "minimum": "1" } } }),
            json!({ "type": "object", "required": "id" }),
            json!({ "type": "object", "properties": { "s": { "type": "string", "maxLength": -1 } } }),
        ] {
            assert!(check_schema(&bad).is_err(), "{bad}");
        }
    }
}
