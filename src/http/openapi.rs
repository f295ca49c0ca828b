//! The OpenAPI 3.1 document, generated from the route registry so it lists every route with
//! its access rule, and can never drift from what is served.

use serde_json::{json, Map, Value};

use super::{Access, RouteSpec};

pub fn document(specs: &[RouteSpec]) -> Value {
    let mut paths = Map::new();
    for spec in specs {
        let path = paths
            .entry(spec.path.to_string())
            .or_insert_with(|| json!({}));
        let method = spec.method.as_str().to_ascii_lowercase();
        let parameters: Vec<Value> = spec
            .params()
            .map(|name| {
                json!({
                    "name": name, "in": "path", "required": true,
                    "schema": { "type": "string", "format": "uuid" }
                })
            })
            .collect();
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
            "parameters": parameters,
            "security": security,
            "responses": {
                "2XX": { "description": "Success" },
                "4XX": { "$ref": "#/components/responses/Error" },
                "5XX": { "$ref": "#/components/responses/Error" }
            }
        });
        if !permission.is_null() {
            operation["x-permission"] = permission;
        }
        if matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH") {
            operation["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": { "type": "object" } } }
            });
        }
        path[method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Custodian",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Governance-first customer-success platform. Every error answers \
                            {\"error\":{\"code\",\"message\"}}."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": { "type": "apiKey", "in": "cookie", "name": super::SESSION_COOKIE },
                "bearer": { "type": "http", "scheme": "bearer" }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string" },
                            "message": { "type": "string" }
                        }
                    }}
                }
            },
            "responses": {
                "Error": {
                    "description": "Error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        }
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
