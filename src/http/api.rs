//! The route registry. A route can only be added together with the access it needs, so a
//! route without a declared permission cannot exist (SEC-1). The registry also feeds the
//! OpenAPI document and the tests that walk every route.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

mod page;
pub use page::PageSpec;

use super::contract::Contract;
use super::request_log::{self, RequestLog};
use crate::rbac::Permission;

/// Wraps a guarded route in what authenticates its caller and checks its access. The guard
/// lives with authentication, above this layer, so the composition hands it to the registry.
pub type Guard<S> = Arc<dyn Fn(Access, MethodRouter<S>) -> MethodRouter<S> + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials. Each use is deliberate: health checks, sign-up, login,
    /// webhooks that carry their own signatures.
    Public,
    /// Any authenticated member, acting on their own account (logout, profile).
    Authenticated,
    /// An authenticated member whose role holds this permission.
    Requires(Permission),
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    /// axum path syntax, `{name}` for parameters.
    pub path: &'static str,
    pub access: Access,
    pub tag: &'static str,
    pub summary: &'static str,
    /// What the route takes and answers, as the OpenAPI document describes it.
    pub contract: Box<Contract>,
}

/// The methods whose requests may carry a body that changes something.
pub fn takes_body(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

impl RouteSpec {
    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }
}

/// The registry of the routes of a router whose state is `S`.
pub struct Api<S> {
    guard: Guard<S>,
    request_log: Arc<RequestLog>,
    router: Router<S>,
    specs: Vec<RouteSpec>,
    /// Every named schema the contracts use, to catch two types that share a name.
    schemas: BTreeMap<String, serde_json::Value>,
    /// The web app's pages: routed and guarded like the API, but not part of its document.
    pages: Vec<PageSpec>,
    /// What every page that takes a form runs inside the guard (the web app's CSRF check).
    form_checks: Option<Guard<S>>,
}

impl<S: Clone + Send + Sync + 'static> Api<S> {
    /// `guard` wraps every route that is not public; guarded routes are logged in
    /// `request_log`.
    pub fn new(guard: Guard<S>, request_log: Arc<RequestLog>) -> Self {
        Api {
            guard,
            request_log,
            router: Router::new(),
            specs: Vec::new(),
            schemas: BTreeMap::new(),
            pages: Vec::new(),
            form_checks: None,
        }
    }

    /// Adds one route with its contract: the schemas of what it takes and answers, which the
    /// OpenAPI document publishes. Anything but `Access::Public` is wrapped in the guard that
    /// authenticates the caller and checks the permission before the handler runs.
    pub fn endpoint<H, T>(
        self,
        method: Method,
        path: &'static str,
        access: Access,
        doc: (&'static str, &'static str),
        contract: Contract,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(method, path, access, doc, Box::new(contract), handler)
    }

    fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        (tag, summary): (&'static str, &'static str),
        contract: Box<Contract>,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let body_limit = contract.body_limit;
        for (name, schema) in &contract.components {
            let known = self
                .schemas
                .entry(name.clone())
                .or_insert_with(|| schema.clone());
            assert!(
                known == schema,
                "two types are named {name} in the API document: rename one \
                 (#[schema(as = ...)])"
            );
        }
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("unsupported method {method} for {path}"));
        assert!(
            !self
                .specs
                .iter()
                .any(|s| s.method == method && s.path == path),
            "route {method} {path} declared twice"
        );
        let mut method_router = on(filter, handler);
        if let Some(limit) = body_limit {
            method_router = method_router.layer(axum::extract::DefaultBodyLimit::max(limit));
        }
        // Whatever its handler reads, a request that changes something speaks JSON: a body in
        // another type, or a declared other type, is refused before the guard or the handler
        // sees it (a `text/plain` POST is what a cross-site form can send).
        if takes_body(&method) {
            method_router =
                method_router.route_layer(axum::middleware::from_fn(super::json_bodies_only));
        }
        let method_router = self.guarded(access, path, method_router);
        self.router = self.router.route(path, method_router);
        self.specs.push(RouteSpec {
            method,
            path,
            access,
            tag,
            summary,
            contract,
        });
        self
    }

    /// Wraps a route that is not public in the guard, and logs it (the request log): the log
    /// layer wraps the guard, and a layer inside the guard tells it who the guard let through.
    /// Public routes are neither guarded nor logged. API routes and pages alike.
    fn guarded(
        &self,
        access: Access,
        path: &'static str,
        method_router: MethodRouter<S>,
    ) -> MethodRouter<S> {
        match access {
            Access::Public => method_router,
            guarded => (self.guard)(
                guarded,
                method_router.route_layer(axum::middleware::from_fn(request_log::note_caller)),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                request_log::LogRoute {
                    log: self.request_log.clone(),
                    route: path,
                },
                request_log::log,
            )),
        }
    }

    pub fn into_parts(self) -> (Router<S>, Vec<RouteSpec>) {
        (self.router, self.specs)
    }
}
