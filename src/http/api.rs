//! The route registry. A route can only be added together with the access it needs, so a
//! route without a declared permission cannot exist (SEC-1). The registry also feeds the
//! OpenAPI document and the tests that walk every route.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use super::request_log;
use crate::app::AppState;
use crate::auth::guard::{require, RouteGuard};
use crate::rbac::Permission;

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

pub struct Api {
    state: AppState,
    router: Router<AppState>,
    specs: Vec<RouteSpec>,
}

impl Api {
    pub fn new(state: AppState) -> Self {
        Api {
            state,
            router: Router::new(),
            specs: Vec::new(),
        }
    }

    /// Adds one route. Anything but `Access::Public` is wrapped in the guard that
    /// authenticates the caller and checks the permission before the handler runs.
    pub fn route<H, T>(
        self,
        method: Method,
        path: &'static str,
        access: Access,
        doc: (&'static str, &'static str),
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, access, doc, None, handler)
    }

    fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        (tag, summary): (&'static str, &'static str),
        body_limit: Option<usize>,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
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
            guarded => method_router
                .route_layer(axum::middleware::from_fn(request_log::note_caller))
                .route_layer(axum::middleware::from_fn_with_state(
                    RouteGuard {
                        state: self.state.clone(),
                        access: guarded,
                    },
                    require,
                ))
                .route_layer(axum::middleware::from_fn_with_state(
                    request_log::LogRoute {
                        state: self.state.clone(),
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
        });
        self
    }

    /// A route whose body may be larger than the server-wide limit (webhooks).
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
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.add(method, path, access, doc, Some(limit), handler)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteSpec>) {
        (self.router, self.specs)
    }
}
