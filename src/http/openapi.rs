//! The OpenAPI 3.1 document, generated from the route registry so it lists every route with
//! its access rule and the schemas of what it takes and answers (its `Contract`), and can never
//! drift from what is served.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::api::takes_body;
use super::contract::Contract;
use super::{Access, RouteSpec};

pub fn document(specs: &[RouteSpec]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
    let mut security_schemes = Map::new();
    security_schemes.insert(
        "session".into(),
        json!({ "type": "apiKey", "in": "cookie", "name": super::SESSION_COOKIE }),
    );
    security_schemes.insert(
        "bearer".into(),
        json!({ "type": "http", "scheme": "bearer" }),
    );
    for spec in specs {
        let path = paths
            .entry(spec.path.to_string())
            .or_insert_with(|| json!({}));
        let method = spec.method.as_str().to_ascii_lowercase();
        let (security, permission) = match spec.access {
            Access::Public => (json!([]), Value::Null),
            Access::Authenticated => (json!([{ "session": [] }, { "bearer": [] }]), Value::Null),
            Access::Requires(p) => (
                json!([{ "session": [] }, { "bearer": [] }]),
                Value::String(p.as_str().into()),
            ),
        };
        let mut operation = json!({
            "operationId": operation_id(spec),
            "summary": spec.summary,
            "tags": [spec.tag],
            "security": security,
        });
        if !permission.is_null() {
            operation["x-permission"] = permission;
        }
        let contract = &spec.contract;
        describe(&mut operation, spec, contract);
        if let Some((name, scheme)) = &contract.credential {
            operation["security"] = json!([{ *name: [] }]);
            security_schemes
                .entry(name.to_string())
                .or_insert_with(|| scheme.clone());
        }
        for (name, schema) in &contract.components {
            schemas
                .entry(name.clone())
                .or_insert_with(|| schema.clone());
        }
        path[method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Custodian",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Governance-first customer-success platform. Every error answers \
                            {\"error\":{\"code\",\"message\"}}; each operation lists the \
                            codes it can answer per status (`x-error-codes`)."
        },
        "paths": paths,
        "components": {
            "securitySchemes": security_schemes,
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "Error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        }
    })
}

/// The error shape every 4xx and 5xx answer has (`error::error_response`).
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error the API answers.",
        "required": ["error"],
        "additionalProperties": false,
        "properties": { "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": false,
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable, machine-readable: what went wrong."
                },
                "message": {
                    "type": "string",
                    "description": "For people; may change."
                }
            }
        }}
    })
}

/// An operation from its route's contract.
fn describe(operation: &mut Value, spec: &RouteSpec, contract: &Contract) {
    let mut parameters: Vec<Value> = Vec::new();
    for name in spec.params() {
        let declared = contract.path.iter().find(|p| p["name"] == name);
        parameters.push(declared.cloned().unwrap_or_else(|| uuid_param(name)));
    }
    parameters.extend(contract.query.iter().cloned());
    operation["parameters"] = Value::Array(parameters);
    if let Some(body) = &contract.request {
        operation["requestBody"] = json!({
            "required": true,
            "content": { body.media_type: { "schema": body.schema } }
        });
    }
    let mut responses = Map::new();
    for (status, content) in &contract.responses {
        let response = responses
            .entry(status.as_u16().to_string())
            .or_insert_with(|| json!({ "description": reason(*status) }));
        if let Some(content) = content {
            if !content.description.is_empty() {
                response["description"] = content.description.into();
            }
            // One status may answer several media types (an export as CSV or JSON).
            response["content"][content.media_type] = json!({ "schema": content.schema });
        }
    }
    for (status, codes) in error_codes(spec, contract) {
        let codes: Vec<&str> = codes.into_iter().collect();
        responses.insert(
            status.as_u16().to_string(),
            json!({
                "description": format!("{}: {}", reason(status), codes.join(", ")),
                "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Error" }
                } },
                "x-error-codes": codes,
            }),
        );
    }
    responses.insert(
        "default".into(),
        json!({ "$ref": "#/components/responses/Error" }),
    );
    operation["responses"] = Value::Object(responses);
}

/// The error codes a route can answer, by status: those of every route of its kind, and those
/// its contract names.
fn error_codes(
    spec: &RouteSpec,
    contract: &Contract,
) -> BTreeMap<StatusCode, BTreeSet<&'static str>> {
    let mut codes: BTreeMap<StatusCode, BTreeSet<&'static str>> = BTreeMap::new();
    let mut add = |status: StatusCode, code: &'static str| {
        codes.entry(status).or_default().insert(code);
    };
    add(StatusCode::REQUEST_TIMEOUT, "timeout");
    add(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    match spec.access {
        Access::Public => {}
        Access::Authenticated => {
            add(StatusCode::UNAUTHORIZED, "unauthorized");
            // A session of a member who owes a two-factor enrolment reaches only enrolment.
            add(StatusCode::FORBIDDEN, "mfa_enrolment_required");
            add(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        }
        Access::Requires(_) => {
            add(StatusCode::UNAUTHORIZED, "unauthorized");
            add(StatusCode::FORBIDDEN, "forbidden");
            add(StatusCode::FORBIDDEN, "mfa_enrolment_required");
            add(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        }
    }
    if takes_body(&spec.method) {
        add(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    if contract.request.is_some() {
        add(StatusCode::BAD_REQUEST, "invalid_body");
        add(StatusCode::BAD_REQUEST, "malformed_json");
        add(StatusCode::BAD_REQUEST, "invalid_text");
        add(StatusCode::BAD_REQUEST, "invalid_number");
        add(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    if spec.params().next().is_some() {
        add(StatusCode::BAD_REQUEST, "invalid_path");
        add(StatusCode::NOT_FOUND, "not_found");
    }
    if !contract.query.is_empty() {
        add(StatusCode::BAD_REQUEST, "invalid_query");
    }
    for (status, code) in &contract.errors {
        add(*status, code);
    }
    codes
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Answer")
}

fn uuid_param(name: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true,
        "schema": { "type": "string", "format": "uuid" }
    })
}

fn operation_id(spec: &RouteSpec) -> String {
    let mut id = spec.method.as_str().to_ascii_lowercase();
    for seg in spec
        .path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "api" && *s != "v1")
    {
        id.push('_');
        id.extend(
            seg.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .map(|c| if c == '-' { '_' } else { c }),
        );
    }
    id
}
