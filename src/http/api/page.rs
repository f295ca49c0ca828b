//! Pages: the web app's routes in the same registry as the API, so each one declares its access
//! (SEC-1) and is guarded and logged like any API route, but kept out of the API's document and
//! free of its JSON-only rule: a page's form arrives as `application/x-www-form-urlencoded`.
//! Instead, every page that takes a body runs the checks the web app hands the registry
//! ([`Api::form_checks`]: the CSRF token), and a page that takes a body cannot be registered
//! before they are.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};

use super::{takes_body, Access, Api, Guard};

/// One page as the registry declared it; `AppState::pages` lists them for the tests that walk
/// every route.
#[derive(Debug, Clone)]
pub struct PageSpec {
    pub method: Method,
    /// axum path syntax, `{name}` for parameters.
    pub path: &'static str,
    pub access: Access,
}

impl PageSpec {
    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }
}

impl<S: Clone + Send + Sync + 'static> Api<S> {
    /// What every page that takes a body runs before its handler: for guarded pages inside the
    /// guard (the caller is known), for public ones (sign-in) on their own.
    pub fn form_checks(mut self, checks: Guard<S>) -> Self {
        self.form_checks = Some(checks);
        self
    }

    /// Adds one page. Anything but `Access::Public` is wrapped in the guard and logged, as API
    /// routes are; a page that takes a body also runs the form checks.
    pub fn page<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("unsupported method {method} for {path}"));
        assert!(
            !self
                .pages
                .iter()
                .any(|p| p.method == method && p.path == path),
            "page {method} {path} declared twice"
        );
        let mut method_router = on(filter, handler);
        if takes_body(&method) {
            let checks = self.form_checks.as_ref().unwrap_or_else(|| {
                panic!("page {method} {path} takes a form: set form_checks first")
            });
            method_router = checks(access, method_router);
        }
        let method_router = self.guarded(access, path, method_router);
        self.router = self.router.route(path, method_router);
        self.pages.push(PageSpec {
            method,
            path,
            access,
        });
        self
    }

    /// The pages registered so far.
    pub fn pages(&self) -> &[PageSpec] {
        &self.pages
    }
}
