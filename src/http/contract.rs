//! What a route takes and answers, as the OpenAPI document describes it: the schemas of its
//! request body, query and path parameters and of each response, generated from the Rust types
//! the handler reads and writes (`utoipa`'s `ToSchema`/`IntoParams` derives), and the error
//! codes it can answer besides the ones every route of its kind can.
//!
//! A route is registered with its contract (`Api::endpoint`). The routes registered without
//! one (`Api::route`) are the debt listed in `openapi::UNDOCUMENTED`, which may only shrink.

use axum::http::StatusCode;
use serde_json::{json, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::{IntoParams, ToSchema};

/// A named schema for `components.schemas`.
pub type Component = (String, Value);

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
        let schema = self.schema_of::<T>();
        self.request = Some(Content {
            media_type: "application/json",
            schema,
            description: "",
        });
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
        let item = self.schema_of::<T>();
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
        self.schema_of::<T>();
        self.returns::<super::Page<T>>(StatusCode::OK)
    }

    /// `status` with `T` as JSON.
    pub fn returns<T: ToSchema>(mut self, status: StatusCode) -> Self {
        let schema = self.schema_of::<T>();
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
    fn schema_of<T: ToSchema>(&mut self) -> Value {
        let mut named = Vec::new();
        T::schemas(&mut named);
        self.components.extend(
            named
                .into_iter()
                .map(|(name, schema)| (name, to_value(&schema))),
        );
        let schema = to_value(&T::schema());
        if std::any::type_name::<T>().contains('<') {
            return schema;
        }
        let name = T::name().into_owned();
        let reference = json!({ "$ref": format!("#/components/schemas/{name}") });
        self.components.push((name, schema));
        reference
    }
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
            }
            param
        })
        .collect()
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

fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("an OpenAPI object serialises")
}
