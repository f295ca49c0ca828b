//! What a route takes and answers, as the OpenAPI document describes it: the schemas of its
//! request body, query and path parameters and of each response, generated from the Rust types
//! the handler reads and writes (`utoipa`'s `ToSchema`/`IntoParams` derives), and the error
//! codes it can answer besides the ones every route of its kind can.
//!
//! A route is registered with its contract (`Api::endpoint`): there is no other way to add one.

use axum::http::StatusCode;
use serde_json::{json, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::{IntoParams, ToSchema};

/// A named schema for `components.schemas`.
pub type Component = (String, Value);

/// Text without U+0000, which PostgreSQL's text and jsonb cannot hold: every request refuses
/// it (`invalid_text`), so every string in the document says so.
pub const NO_NUL: &str = "^[^\\u0000]*$";

/// Text that is not blank once trimmed, without U+0000: for the required names and texts the
/// handlers trim. (A character outside the pattern's `\s` is never white space to `str::trim`.)
pub const NOT_BLANK: &str = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$";

/// A name of one line: not blank once trimmed, and no control character (`char::is_control`,
/// the category Cc) anywhere.
pub const ONE_LINE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// The patterns a type names with `#[schema(pattern = "$name")]` (utoipa takes only a literal
/// there), so each is written once.
const PATTERNS: &[(&str, &str)] = &[
    ("$not_blank", NOT_BLANK),
    ("$one_line", ONE_LINE),
    ("$http_url", super::egress::HTTP_URL),
    ("$https_url", super::egress::HTTPS_URL),
];

/// The name of the free-form JSON value schema (`attributes`, a guardrail configuration).
const JSON_VALUE: &str = "JsonValue";

#[derive(Debug, Clone, Default)]
pub struct Contract {
    pub(crate) request: Option<Content>,
    pub(crate) responses: Vec<(StatusCode, Option<Content>)>,
    pub(crate) query: Vec<Value>,
    pub(crate) path: Vec<Value>,
    /// Error codes this route answers beyond those of every route of its kind (the registry
    /// adds those: authentication, permission, malformed bodies, rate limits...).
    pub(crate) errors: Vec<(StatusCode, &'static str)>,
    pub(crate) components: Vec<Component>,
    pub(crate) body_limit: Option<usize>,
    /// The credential a public route reads itself, instead of a member's (a web chat
    /// visitor's session): its security scheme's name and OpenAPI object.
    pub(crate) credential: Option<(&'static str, Value)>,
}

/// One body: its media type and schema.
#[derive(Debug, Clone)]
pub struct Content {
    pub media_type: &'static str,
    pub schema: Value,
    pub description: &'static str,
}

impl Contract {
    pub fn new() -> Self {
        Self::default()
    }

    /// The JSON request body.
    pub fn body<T: ToSchema>(mut self) -> Self {
        let schema = self.schema_of::<T>(Side::Request);
        self.request = Some(Content {
            media_type: "application/json",
            schema,
            description: "",
        });
        self
    }

    /// The request body refuses fields it does not name in each of its variants too (a tagged
    /// enum with `deny_unknown_fields`, which utoipa states only for structs).
    pub fn closed_variants(mut self) -> Self {
        let content = self.request.as_ref().expect("closed_variants after body");
        let name = component_name(&content.schema)
            .expect("a named body type")
            .to_string();
        for (n, schema) in self.components.iter_mut() {
            if *n != name {
                continue;
            }
            for key in ["oneOf", "anyOf"] {
                for variant in schema
                    .get_mut(key)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if variant.get("properties").is_some() {
                        variant["additionalProperties"] = false.into();
                    }
                }
            }
        }
        self
    }

    /// A rule of the request body that its type cannot state (which fields go together, which
    /// one of several is required), as JSON Schema keywords the body must also meet. The rule
    /// belongs to this route: the same type may go without it elsewhere (creating needs a
    /// name, correcting does not).
    pub fn body_rule(mut self, rule: Value) -> Self {
        let content = self.request.as_mut().expect("body_rule after body");
        let mut rule = rule;
        harden(&mut rule, Side::Request);
        content.schema = json!({ "allOf": [content.schema.take(), rule] });
        self
    }

    /// `200 OK` with `T` as JSON.
    pub fn ok<T: ToSchema>(self) -> Self {
        self.returns::<T>(StatusCode::OK)
    }

    /// `201 Created` with `T` as JSON.
    pub fn created<T: ToSchema>(self) -> Self {
        self.returns::<T>(StatusCode::CREATED)
    }

    /// `200 OK` with a JSON array of `T`.
    pub fn ok_list<T: ToSchema>(mut self) -> Self {
        let item = self.schema_of::<T>(Side::Response);
        self.responses.push((
            StatusCode::OK,
            Some(Content {
                media_type: "application/json",
                schema: json!({ "type": "array", "items": item }),
                description: "",
            }),
        ));
        self
    }

    /// `200 OK` with one page of `T` (`Page<T>`, whatever its cursor: every cursor is a string).
    pub fn ok_page<T: ToSchema>(mut self) -> Self {
        // A generic's own schemas leave out its type argument: name it here.
        self.schema_of::<T>(Side::Response);
        self.returns::<super::Page<T>>(StatusCode::OK)
    }

    /// `status` with `T` as JSON.
    pub fn returns<T: ToSchema>(mut self, status: StatusCode) -> Self {
        let schema = self.schema_of::<T>(Side::Response);
        self.responses.push((
            status,
            Some(Content {
                media_type: "application/json",
                schema,
                description: "",
            }),
        ));
        self
    }

    /// `200 OK` with a JSON object whose shape is not fixed (a guardrail configuration, this
    /// document): `description` says what it holds, and that it is free-form.
    pub fn ok_free_form(mut self, description: &'static str) -> Self {
        self.responses.push((
            StatusCode::OK,
            Some(Content {
                media_type: "application/json",
                schema: json!({ "type": "object", "description": format!("Free-form: {description}") }),
                description: "",
            }),
        ));
        self
    }

    /// `204 No Content`.
    pub fn no_content(mut self) -> Self {
        self.responses.push((StatusCode::NO_CONTENT, None));
        self
    }

    /// A success answer that is not JSON (a CSV file, an event stream, a script).
    pub fn returns_media(
        mut self,
        status: StatusCode,
        media_type: &'static str,
        description: &'static str,
    ) -> Self {
        self.responses.push((
            status,
            Some(Content {
                media_type,
                schema: json!({ "type": "string", "description": description }),
                description,
            }),
        ));
        self
    }

    /// The query parameters, from the struct the handler's `Query` reads.
    pub fn query<T: IntoParams>(mut self) -> Self {
        self.query = params::<T>(ParameterIn::Query);
        self
    }

    /// The path parameters, when they are not all UUIDs (the registry's default for a
    /// `{name}` segment).
    pub fn path<T: IntoParams>(mut self) -> Self {
        self.path = params::<T>(ParameterIn::Path);
        self
    }

    /// An error code this route can answer with `status`.
    pub fn error(mut self, status: StatusCode, code: &'static str) -> Self {
        self.errors.push((status, code));
        self
    }

    /// The credential this public route checks itself (`Access::Public` routes take no
    /// member's): `name` is its security scheme in the document, `scheme` that scheme's OpenAPI
    /// object (`{"type": "apiKey", "in": "header", "name": ...}`).
    pub fn credential(mut self, name: &'static str, scheme: Value) -> Self {
        self.credential = Some((name, scheme));
        self
    }

    /// A route whose body may be larger than the server-wide limit (webhooks).
    pub fn body_limit(mut self, limit: usize) -> Self {
        self.body_limit = Some(limit);
        self
    }

    /// The schema of `T` where it is used: a reference to its component for a named type, the
    /// schema itself for a generic one (a `Page<T>`: utoipa names every instance alike). The
    /// components it refers to are collected either way.
    fn schema_of<T: ToSchema>(&mut self, side: Side) -> Value {
        let mut named = Vec::new();
        T::schemas(&mut named);
        let mut free_form = false;
        let mut harden = |mut schema: Value| {
            free_form |= harden(&mut schema, side);
            schema
        };
        let named: Vec<Component> = named
            .into_iter()
            .map(|(name, schema)| (name, harden(to_value(&schema))))
            .collect();
        self.components.extend(named);
        let schema = harden(to_value(&T::schema()));
        if free_form {
            self.components.extend(json_value_schemas());
        }
        if std::any::type_name::<T>().contains('<') {
            return schema;
        }
        let name = T::name().into_owned();
        let reference = json!({ "$ref": format!("#/components/schemas/{name}") });
        self.components.push((name, schema));
        reference
    }
}

/// The component a schema refers to (`{"$ref": "#/components/schemas/Name"}`), by name.
fn component_name(schema: &Value) -> Option<&str> {
    schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
}

/// The parameters of `T`. An optional one is simply left out: a query string or path cannot
/// carry JSON's `null`, so the `Option`'s null is dropped from its type.
fn params<T: IntoParams>(location: ParameterIn) -> Vec<Value> {
    T::into_params(|| Some(location.clone()))
        .iter()
        .map(|param| {
            let mut param = to_value(param);
            if let Some(schema) = param.get_mut("schema") {
                drop_null(schema);
                harden(schema, Side::Request);
            }
            param
        })
        .collect()
}

/// Which way a schema describes a body: what a request may hold, or what an answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    /// A free-form value in an answer is any value, at any depth (an execution record).
    Response,
}

/// States what every request refuses in the schemas the types give: a string without choices
/// or a pattern of its own may not hold U+0000, and a free-form object (a `Value`) holds
/// JSON values whose texts and keys may not either. Whether a free-form object was found: its
/// values refer to the `JsonValue` component.
fn harden(schema: &mut Value, side: Side) -> bool {
    let mut free_form = false;
    if let Some(raw) = schema.get_mut(RAW).map(Value::take) {
        *schema = raw;
    }
    match schema {
        Value::Object(map) => {
            let types: Vec<String> = match map.get("type") {
                Some(Value::String(t)) => vec![t.clone()],
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            if let Some(Value::String(pattern)) = map.get_mut("pattern") {
                if pattern.starts_with('$') {
                    let (_, real) = PATTERNS
                        .iter()
                        .find(|(name, _)| name == pattern)
                        .unwrap_or_else(|| panic!("no pattern named {pattern}"));
                    *pattern = real.to_string();
                }
            }
            // A format such as `password` does not rule U+0000 out; choices and patterns do.
            let plain = ["enum", "const", "pattern"]
                .iter()
                .all(|k| !map.contains_key(*k));
            if types.iter().any(|t| t == "string") && plain {
                map.insert("pattern".into(), NO_NUL.into());
            } else if types.iter().any(|t| t == "string")
                && map
                    .get("pattern")
                    .and_then(Value::as_str)
                    .is_some_and(|p| !p.starts_with('^'))
            {
                // An unanchored pattern (`\S`: "holds something") lets U+0000 through.
                let rule = json!({ "pattern": NO_NUL });
                match map.get_mut("allOf").and_then(Value::as_array_mut) {
                    Some(all) => all.push(rule),
                    None => {
                        map.insert("allOf".into(), json!([rule]));
                    }
                }
            }
            if types.iter().any(|t| t == "number") {
                number_limits(map);
            } else if types.iter().any(|t| t == "integer") {
                integer_limits(map);
            }
            if side == Side::Request
                && types.iter().any(|t| t == "object")
                && !map.contains_key("properties")
                && !map.contains_key("additionalProperties")
            {
                map.insert("propertyNames".into(), json!({ "pattern": NO_NUL }));
                map.insert(
                    "additionalProperties".into(),
                    json!({ "$ref": format!("#/components/schemas/{JSON_VALUE}") }),
                );
                free_form = true;
            }
            for value in map.values_mut() {
                free_form |= harden(value, side);
            }
        }
        Value::Array(items) => {
            for item in items {
                free_form |= harden(item, side);
            }
        }
        _ => {}
    }
    free_form
}

/// Every request refuses a number too small or too large for PostgreSQL's jsonb to give back
/// (`http::NUMBER_MAGNITUDE`): a number's schema says so.
fn number_limits(map: &mut serde_json::Map<String, Value>) {
    let (smallest, largest) = super::NUMBER_MAGNITUDE;
    if !map.contains_key("maximum") && !map.contains_key("exclusiveMaximum") {
        map.insert("maximum".into(), largest.into());
    }
    if !map.contains_key("minimum") && !map.contains_key("exclusiveMinimum") {
        map.insert("minimum".into(), (-largest).into());
    }
    if !map.contains_key("not") {
        map.insert(
            "not".into(),
            json!({
                "type": "number", "exclusiveMinimum": -smallest, "exclusiveMaximum": smallest,
                "not": { "const": 0 }
            }),
        );
    }
}

/// An integer's bounds are its Rust type's, which the format names but a generator does not
/// read: say them.
fn integer_limits(map: &mut serde_json::Map<String, Value>) {
    let (min, max): (i128, i128) = match map.get("format").and_then(Value::as_str) {
        Some("int8") => (i8::MIN.into(), i8::MAX.into()),
        Some("uint8") => (0, u8::MAX.into()),
        Some("int16") => (i16::MIN.into(), i16::MAX.into()),
        Some("uint16") => (0, u16::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("uint32") => (0, u32::MAX.into()),
        Some("uint64") => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    };
    let bound = |v: i128| match v < 0 {
        true => Value::from(v as i64),
        false => Value::from(v as u64),
    };
    if !map.contains_key("maximum") && !map.contains_key("exclusiveMaximum") {
        map.insert("maximum".into(), bound(max));
    }
    if !map.contains_key("minimum") && !map.contains_key("exclusiveMinimum") {
        map.insert("minimum".into(), bound(min));
    }
}

/// How deep the document spells out a free-form value. The server takes any depth; a schema
/// that refers to itself is beyond the client generators (openapi-python-client gives up on
/// every type that holds one), so the document unrolls a few levels instead, and below them
/// holds scalars only. (A free-form value in an answer is left any value, at any depth.)
const JSON_DEPTH: usize = 4;

/// Any JSON value whose texts and keys hold no U+0000 and whose numbers jsonb gives back:
/// `JsonValue`, unrolled `JSON_DEPTH` levels deep (`JsonValue1` holds scalars only).
fn json_value_schemas() -> Vec<Component> {
    let (smallest, largest) = super::NUMBER_MAGNITUDE;
    let rules = format!(
        "No text or key may hold U+0000; a number is 0 or between {smallest:e} and {largest:e} in \
         magnitude."
    );
    let mut levels = Vec::new();
    for depth in 1..=JSON_DEPTH {
        let mut branches = vec![
            json!({ "type": "null" }),
            json!({ "type": "boolean" }),
            json!({ "type": "number", "minimum": -largest, "maximum": largest,
                    "not": { "type": "number", "exclusiveMinimum": -smallest,
                             "exclusiveMaximum": smallest, "not": { "const": 0 } } }),
            json!({ "type": "string", "pattern": NO_NUL }),
        ];
        if depth > 1 {
            let inner =
                json!({ "$ref": format!("#/components/schemas/{JSON_VALUE}{}", depth - 1) });
            branches.push(json!({ "type": "array", "items": inner }));
            branches.push(json!({
                "type": "object", "propertyNames": { "pattern": NO_NUL },
                "additionalProperties": inner
            }));
        }
        let name = match depth {
            JSON_DEPTH => JSON_VALUE.to_string(),
            _ => format!("{JSON_VALUE}{depth}"),
        };
        let description = format!(
            "Any JSON value (spelled out {depth} levels deep; deeper is taken too). {rules}"
        );
        levels.push((
            name,
            json!({ "description": description, "anyOf": branches }),
        ));
    }
    levels
}

/// `["string", "null"]` becomes `"string"`, `oneOf: [null, X]` becomes `X`.
fn drop_null(schema: &mut Value) {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            schema["type"] = only.clone();
        }
    }
    if let Some(choices) = schema.get_mut("oneOf").and_then(Value::as_array_mut) {
        choices.retain(|c| c.get("type").and_then(Value::as_str) != Some("null"));
        if let [only] = choices.as_slice() {
            *schema = only.clone();
        }
    }
}

/// A schema written as JSON, for a field or parameter whose type cannot describe itself
/// (`#[param(schema_with = ...)]`).
pub fn schema(value: Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    serde_json::from_value(value).expect("a valid schema")
}

/// Where [`raw_schema`] keeps its JSON inside utoipa's schema type, which reads only the
/// keywords it models (no `if`, `contains`, `not` next to `properties`...) but keeps extensions.
const RAW: &str = "x-raw-schema";

/// A schema written as JSON that the document takes exactly as written, whatever keywords it
/// uses (`if`/`then`, `contains`, `not`, `oneOf` beside `properties`), where [`schema`] would
/// keep only those utoipa models. Hardened like every other schema.
pub fn raw_schema(value: Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let mut object = utoipa::openapi::schema::Object::new();
    let mut extensions = utoipa::openapi::extensions::Extensions::default();
    extensions.insert(RAW.into(), value);
    object.extensions = Some(extensions);
    utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(object))
}

fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("an OpenAPI object serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_written_as_json_are_taken() {
        for value in [
            json!({ "anyOf": [{ "type": "string", "format": "uuid" }, { "type": "string", "enum": ["me", "none"] }] }),
            json!({ "type": "array", "maxItems": 20, "items": { "type": "string", "maxLength": 50, "pattern": NOT_BLANK } }),
            json!({ "type": ["string", "null"], "pattern": "^x$" }),
            json!({ "type": "string", "enum": ["admin", "agent"] }),
        ] {
            let back = to_value(&schema(value.clone()));
            assert_eq!(back, value);
        }
    }

    #[test]
    fn raw_schemas_keep_every_keyword_and_are_hardened() {
        let value = json!({ "type": "object", "properties": { "a": { "type": "string", "enum": ["x"] } },
            "oneOf": [{ "required": ["a"] }, { "required": ["b"] }],
            "if": { "required": ["a"] }, "then": { "not": { "required": ["b"] } },
            "contains": { "const": 1 }, "maxItems": 0 });
        let mut back = to_value(&raw_schema(value.clone()));
        harden(&mut back, Side::Request);
        assert_eq!(back, value);
        let mut text = to_value(&raw_schema(json!({ "type": "string" })));
        harden(&mut text, Side::Request);
        assert_eq!(text, json!({ "type": "string", "pattern": NO_NUL }));
    }
}
