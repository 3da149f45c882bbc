//! The method guard: 405 with `Allow` for a method the route does not accept.

use http::{HeaderValue, Method, header};

use crate::policy::{Denial, Exchange, Reason};

/// Refuses methods outside the route's list (`method_not_allowed`).
#[derive(Debug, Clone)]
pub struct MethodGuard {
    methods: Vec<Method>,
    allow: HeaderValue,
}

impl MethodGuard {
    /// A guard accepting exactly `methods`.
    pub fn new(methods: &[Method]) -> Self {
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        MethodGuard {
            methods: methods.to_vec(),
            allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("POST")),
        }
    }

    /// The accepted methods.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The `Allow` header value.
    pub fn allow(&self) -> &HeaderValue {
        &self.allow
    }

    /// Checks the request's method.
    pub fn check(&self, ex: &Exchange) -> Result<(), Denial> {
        if self.methods.contains(&ex.method) {
            return Ok(());
        }
        Err(Denial::new(Reason::MethodNotAllowed).with_header(header::ALLOW, self.allow.clone()))
    }
}
