//! The API document as it is served: every route is registered with its contract (there is no
//! other way), and every operation has real schemas for what it takes and answers (issue #13).

use serde_json::Value;

use crate::common::{Req, TestApp};

async fn served_document() -> (TestApp, Value) {
    let app = TestApp::spawn().await;
    let doc = app.send(Req::get("/api/openapi.json")).await.body;
    (app, doc)
}

/// Follows a `#/components/schemas/…` reference.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {reference}"));
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "{reference} does not resolve");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Whether a schema says what the body holds: an object with its properties, an array of such,
/// a composition, a scalar, or an object declared free-form in its description.
fn is_real_schema(doc: &Value, schema: &Value) -> bool {
    let schema = resolve(doc, schema);
    if ["allOf", "oneOf", "anyOf", "enum", "const"]
        .iter()
        .any(|k| schema.get(k).is_some())
    {
        return true;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"array") {
        return is_real_schema(doc, &schema["items"]);
    }
    if types.contains(&"object") {
        let has_properties = schema["properties"]
            .as_object()
            .is_some_and(|p| !p.is_empty());
        let free_form = schema["description"]
            .as_str()
            .is_some_and(|d| d.to_lowercase().contains("free-form"));
        return has_properties || free_form;
    }
    !types.is_empty()
}

fn operations(doc: &Value) -> impl Iterator<Item = (&String, &String, &Value)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(method, op)| (path, method, op))
        })
}

#[tokio::test]
async fn every_operation_describes_its_request_body_and_its_success_answers() {
    let (app, doc) = served_document().await;
    let mut checked = 0;
    for (path, method, op) in operations(&doc) {
        checked += 1;
        let what = format!("{} {path}", method.to_uppercase());
        if let Some(body) = op.get("requestBody") {
            assert_eq!(body["required"], true, "{what}: an optional body");
            let schema = &body["content"]["application/json"]["schema"];
            assert!(
                is_real_schema(&doc, schema),
                "{what}: the request body has no real schema: {schema}"
            );
        }
        let responses = op["responses"].as_object().unwrap();
        let successes: Vec<(&String, &Value)> = responses
            .iter()
            .filter(|(status, _)| status.starts_with('2'))
            .collect();
        assert!(!successes.is_empty(), "{what}: no success answer");
        for (status, response) in successes {
            if status == "204" {
                assert!(response.get("content").is_none(), "{what}: 204 with a body");
                continue;
            }
            let content = response["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{what} {status}: no content"));
            for (media_type, media) in content {
                assert!(
                    is_real_schema(&doc, &media["schema"]),
                    "{what} {status} {media_type}: no real schema: {}",
                    media["schema"]
                );
            }
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{what} {status}: not the error shape"
                );
                assert!(response["x-error-codes"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty()));
            }
        }
    }
    assert_eq!(
        checked,
        app.state.routes().len(),
        "an operation of the document per route"
    );
}

#[tokio::test]
async fn every_schema_reference_in_the_document_resolves() {
    fn walk(doc: &Value, value: &Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let mut target = doc;
                    for segment in reference.trim_start_matches("#/").split('/') {
                        target = &target[segment];
                    }
                    assert!(target.is_object(), "{reference} does not resolve");
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    let (_app, doc) = served_document().await;
    walk(&doc, &doc);
}

#[tokio::test]
async fn the_document_version_is_the_crate_version() {
    let (_app, doc) = served_document().await;
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn the_reference_page_lists_every_operation_of_the_document_under_a_csp_of_its_own() {
    let (app, doc) = served_document().await;
    let page = app.send(Req::get("/api/docs")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'self';"),
        "{csp}"
    );
    assert!(
        !csp.contains("script-src"),
        "the page needs no script: {csp}"
    );
    let html = page.body.as_str().expect("an HTML page");
    assert!(!html.contains("<script"), "a script on the reference page");
    for (path, method, op) in operations(&doc) {
        let anchor = format!("id=\"{}\"", op["operationId"].as_str().unwrap());
        assert!(
            html.contains(&anchor),
            "{} {path} is not on the page",
            method.to_uppercase()
        );
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            html.contains(&format!("id=\"schema-{name}\"")),
            "schema {name} is missing"
        );
    }
    let css = app.send(Req::get("/api/docs.css")).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
}
