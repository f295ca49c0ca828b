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
    /// What the route takes and answers; `None` only for the routes still listed in
    /// `openapi::UNDOCUMENTED`.
    pub contract: Option<Contract>,
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

/// Whether a route comes with its contract; the routes without one are the listed debt.
enum Described {
    By(Contract),
    Not { body_limit: Option<usize> },
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
        self.add(method, path, access, doc, Described::By(contract), handler)
    }

    /// Adds one route without its schemas: only for the routes still listed in
    /// `openapi::UNDOCUMENTED` (issue #13 converts them all to `endpoint`, then this goes).
    pub fn route<H, T>(
        self,
        method: Method,
        path: &'static str,
        access: Access,
        doc: (&'static str, &'static str),
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(
            method,
            path,
            access,
            doc,
            Described::Not { body_limit: None },
            handler,
        )
    }

    fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        (tag, summary): (&'static str, &'static str),
        described: Described,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let (contract, body_limit) = match described {
            Described::By(contract) => {
                let limit = contract.body_limit;
                (Some(contract), limit)
            }
            Described::Not { body_limit } => (None, body_limit),
        };
        // A new route is born with its schemas: only the listed debt may go without.
        assert!(
            contract.is_some() || super::openapi::is_undocumented(&method, path),
            "route {method} {path} has no contract: register it with Api::endpoint"
        );
        for (name, schema) in contract.iter().flat_map(|c| &c.components) {
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
        // Guarded routes are logged (the request log): the log layer wraps the guard, and a
        // layer inside the guard tells it who the guard let through. Public routes are not.
        let method_router = match access {
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
        };
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

    /// A route without its schemas whose body may be larger than the server-wide limit
    /// (webhooks); like `route`, only for the listed debt (`Contract::body_limit` otherwise).
    pub fn route_with_body_limit<H, T>(
        self,
        method: Method,
        path: &'static str,
        access: Access,
        doc: (&'static str, &'static str),
        limit: usize,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(
            method,
            path,
            access,
            doc,
            Described::Not {
                body_limit: Some(limit),
            },
            handler,
        )
    }

    pub fn into_parts(self) -> (Router<S>, Vec<RouteSpec>) {
        (self.router, self.specs)
    }
}
