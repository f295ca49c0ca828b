//! `/api/docs`: the API reference for people, rendered by the server from the same document
//! `/api/openapi.json` serves. No script and no renderer from elsewhere: one HTML page, with a
//! stylesheet of its own route, under a CSP that allows exactly that stylesheet.

use std::fmt::Write;

use serde_json::Value;

/// The page's CSP: nothing but its own stylesheet.
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub const STYLESHEET: &str = include_str!("docs.css");

/// The reference page for `doc`, an OpenAPI 3.1 document as `openapi::document` writes it.
pub fn page(doc: &Value) -> String {
    let info = &doc["info"];
    let mut out = String::with_capacity(256 * 1024);
    let title = text(&info["title"]);
    let version = text(&info["version"]);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} API {v}</title><link rel=\"stylesheet\" href=\"/api/docs.css\"></head><body>\
         <header><h1>{t} API <span class=\"version\">{v}</span></h1><p>{d}</p>\
         <p>The machine-readable document: <a href=\"/api/openapi.json\">/api/openapi.json</a> \
         (OpenAPI 3.1). Authenticate with a session cookie (<code>POST /api/v1/auth/login</code>) \
         or an API token as <code>Authorization: Bearer …</code>.</p></header>",
        t = esc(&title),
        v = esc(&version),
        d = esc(&text(&info["description"])),
    );
    let operations = operations(doc);
    out.push_str("<nav aria-label=\"Operations\"><h2>Operations</h2>");
    let mut tags: Vec<&str> = operations.iter().map(|o| o.tag).collect();
    tags.dedup();
    tags.sort_unstable();
    tags.dedup();
    for tag in &tags {
        let _ = write!(out, "<h3>{}</h3><ul>", esc(tag));
        for op in operations.iter().filter(|o| o.tag == *tag) {
            let _ = write!(
                out,
                "<li><a href=\"#{id}\"><span class=\"method {m}\">{M}</span> {p}</a></li>",
                id = esc(op.id),
                m = op.method,
                M = op.method.to_uppercase(),
                p = esc(op.path),
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("<h3>Schemas</h3><p><a href=\"#schemas\">All schemas</a></p></nav><main>");
    for tag in &tags {
        let _ = write!(out, "<section><h2>{}</h2>", esc(tag));
        for op in operations.iter().filter(|o| o.tag == *tag) {
            operation(&mut out, op);
        }
        out.push_str("</section>");
    }
    out.push_str("<section id=\"schemas\"><h2>Schemas</h2>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let _ = write!(
                out,
                "<article class=\"schema\" id=\"schema-{n}\"><h3>{n}</h3>",
                n = esc(name)
            );
            schema_body(&mut out, schema);
            out.push_str("</article>");
        }
    }
    out.push_str("</section></main></body></html>");
    out
}

struct Operation<'a> {
    tag: &'a str,
    id: &'a str,
    method: &'a str,
    path: &'a str,
    op: &'a Value,
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            all.push(Operation {
                tag: op["tags"][0].as_str().unwrap_or("other"),
                id: op["operationId"].as_str().unwrap_or(""),
                method,
                path,
                op,
            });
        }
    }
    all
}

fn operation(out: &mut String, o: &Operation) {
    let op = o.op;
    let _ = write!(
        out,
        "<article class=\"operation\" id=\"{id}\"><h3><span class=\"method {m}\">{M}</span> \
         <code>{p}</code></h3><p>{s}</p>",
        id = esc(o.id),
        m = o.method,
        M = o.method.to_uppercase(),
        p = esc(o.path),
        s = esc(&text(&op["summary"])),
    );
    let access = match (op["security"].as_array(), op["x-permission"].as_str()) {
        (Some(s), _) if s.is_empty() => "Public: no credentials.".to_string(),
        (_, Some(permission)) => {
            format!("Requires the permission <code>{}</code>.", esc(permission))
        }
        _ => "Any signed-in member.".to_string(),
    };
    let _ = write!(out, "<p class=\"access\">{access}</p>");
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(
            "<h4>Parameters</h4><table><thead><tr><th>Name</th><th>In</th><th>Type</th>\
             <th>Description</th></tr></thead><tbody>",
        );
        for param in params {
            let required = if param["required"] == true {
                " <em>required</em>"
            } else {
                ""
            };
            let _ = write!(
                out,
                "<tr><td><code>{n}</code>{required}</td><td>{i}</td><td>{t}</td><td>{d}</td></tr>",
                n = esc(&text(&param["name"])),
                i = esc(&text(&param["in"])),
                t = type_of(&param["schema"]),
                d = esc(&text(&param["description"])),
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        out.push_str("<h4>Request body</h4>");
        for (media, body) in content {
            let _ = write!(
                out,
                "<p><code>{}</code>: {}</p>",
                esc(media),
                type_of(&body["schema"])
            );
        }
    }
    out.push_str(
        "<h4>Answers</h4><table><thead><tr><th>Status</th><th>Body</th><th>Meaning</th></tr>\
         </thead><tbody>",
    );
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        if status == "default" {
            continue;
        }
        let body = response["content"]
            .as_object()
            .map(|content| {
                content
                    .iter()
                    .map(|(media, c)| {
                        format!("<code>{}</code> {}", esc(media), type_of(&c["schema"]))
                    })
                    .collect::<Vec<_>>()
                    .join("<br>")
            })
            .unwrap_or_else(|| "none".into());
        let meaning = match response["x-error-codes"].as_array() {
            Some(codes) => codes
                .iter()
                .map(|c| format!("<code>{}</code>", esc(&text(c))))
                .collect::<Vec<_>>()
                .join(" "),
            None => esc(&text(&response["description"])),
        };
        let _ = write!(
            out,
            "<tr><td class=\"status s{c}\">{s}</td><td>{body}</td><td>{meaning}</td></tr>",
            c = &status[..1],
            s = esc(status),
        );
    }
    out.push_str("</tbody></table></article>");
}

/// A schema's fields as a table, or its type when it has no fields.
fn schema_body(out: &mut String, schema: &Value) {
    let description = text(&schema["description"]);
    if !description.is_empty() {
        let _ = write!(out, "<p>{}</p>", esc(&description));
    }
    let Some(properties) = schema["properties"].as_object() else {
        let _ = write!(out, "<p>{}</p>", type_of(schema));
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str(
        "<table><thead><tr><th>Field</th><th>Type</th><th>Description</th></tr></thead><tbody>",
    );
    for (name, field) in properties {
        let flag = if required.contains(&name.as_str()) {
            " <em>required</em>"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr><td><code>{n}</code>{flag}</td><td>{t}</td><td>{d}</td></tr>",
            n = esc(name),
            t = type_of(field),
            d = esc(&text(&field["description"])),
        );
    }
    out.push_str("</tbody></table>");
    if schema["additionalProperties"] == false {
        out.push_str("<p class=\"note\">Other fields are refused.</p>");
    }
}

/// A schema's type in a few words, with its limits, linking to named schemas (HTML).
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{n}\">{n}</a>", n = esc(name));
    }
    for (key, joiner) in [("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")] {
        if let Some(choices) = schema[key].as_array() {
            return choices.iter().map(type_of).collect::<Vec<_>>().join(joiner);
        }
    }
    let mut words = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().map(text).collect(),
        _ => vec!["any".into()],
    };
    if let Some(item) = words.iter_mut().find(|w| *w == "array") {
        *item = format!("array of {}", type_of(&schema["items"]));
    }
    let mut label = words
        .iter()
        .map(|w| {
            if w.starts_with("array of") {
                w.clone()
            } else {
                esc(w)
            }
        })
        .collect::<Vec<_>>()
        .join(" | ");
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect();
        label = format!("one of {}", values.join(", "));
    }
    let limits: Vec<String> = [
        ("format", ""),
        ("minLength", "at least {} characters"),
        ("maxLength", "at most {} characters"),
        ("minimum", "≥ {}"),
        ("maximum", "≤ {}"),
        ("minItems", "at least {} items"),
        ("maxItems", "at most {} items"),
        ("pattern", "matches {}"),
        ("default", "default {}"),
    ]
    .iter()
    .filter_map(|(key, template)| {
        let value = schema.get(*key)?;
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some(if template.is_empty() {
            esc(&value)
        } else {
            esc(&template.replace("{}", &value))
        })
    })
    .collect();
    if !limits.is_empty() {
        label = format!("{label} <small>({})</small>", limits.join("; "));
    }
    label
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_from_the_document_is_escaped_and_named_schemas_are_linked() {
        let doc = json!({
            "info": { "title": "T", "version": "1", "description": "<script>x</script>" },
            "paths": { "/a/{id}": { "get": {
                "operationId": "get_a", "summary": "Show <a>", "tags": ["a"], "security": [],
                "parameters": [{ "name": "id", "in": "path", "required": true,
                                 "schema": { "type": "string", "format": "uuid" } }],
                "responses": { "200": { "description": "OK", "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/A" } } } } }
            } } },
            "components": { "schemas": { "A": { "type": "object", "required": ["n"],
                "properties": { "n": { "type": "string", "maxLength": 5 } } } } }
        });
        let html = page(&doc);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("Show &lt;a&gt;"));
        assert!(html.contains("<a href=\"#schema-A\">A</a>"));
        assert!(html.contains("id=\"schema-A\""));
        assert!(html.contains("at most 5 characters"));
        assert!(html.contains("Public: no credentials."));
    }
}
