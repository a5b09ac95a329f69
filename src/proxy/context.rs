//! The request from tenant resolution on. Every step after the tenant step
//! takes a [`Routed`]: the tenant, the client, the rewrite and the access
//! record travel as fields, not as request extensions, so a step that
//! needs the tenant cannot be put before it is known.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::Request;

use super::routes::{Routes, Tenant};
use crate::access_log::AccessSlot;
use crate::clients::Client;

#[derive(Debug)]
pub struct Routed<B> {
    pub req: Request<B>,
    pub tenant: Arc<Tenant>,
    /// The gateway client that called, when clients are configured.
    pub client: Option<Arc<Client>>,
    /// The `tenant_from` rule that picked the tenant (its index), or `None`
    /// for `default_tenant`.
    pub rule: Option<usize>,
    /// The `rewrites` rule that changed the path, if one did.
    pub rewrite: Option<Rewritten>,
    /// The access line's record, when the access log is on.
    pub access: Option<Arc<AccessSlot>>,
    /// The routes snapshot the request is served with (one per request).
    pub routes: Arc<Routes>,
}

/// What a `rewrites` rule did to a request's path.
#[derive(Clone, Debug)]
pub struct Rewritten {
    pub label: Arc<str>,
    /// Counted where the request's outcome is recorded (`record`).
    pub counter: prometheus::IntCounter,
    /// The path (and query) as the app sent it, after the tenant prefix.
    pub original: PathAndQuery,
}

impl<B> Routed<B> {
    /// The same request with another body.
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> Routed<C> {
        Routed {
            req: self.req.map(f),
            tenant: self.tenant,
            client: self.client,
            rule: self.rule,
            rewrite: self.rewrite,
            access: self.access,
            routes: self.routes,
        }
    }

    /// The head and the body apart, and the rest as the context `with` puts
    /// back around a new request (the OAuth retry keeps the body aside).
    pub fn into_parts(self) -> (http::request::Parts, B, Routed<()>) {
        // `map` moves every field across; only the body and head are taken out.
        let mut body = None;
        let mut context = self.map(|b| body = Some(b));
        let (head, ()) = std::mem::replace(&mut context.req, Request::new(())).into_parts();
        (head, body.expect("map hands the body over"), context)
    }

    /// `req` carrying everything else this request carries.
    pub fn with<C>(&self, req: Request<C>) -> Routed<C> {
        Routed {
            req,
            tenant: self.tenant.clone(),
            client: self.client.clone(),
            rule: self.rule,
            rewrite: self.rewrite.clone(),
            access: self.access.clone(),
            routes: self.routes.clone(),
        }
    }
}
