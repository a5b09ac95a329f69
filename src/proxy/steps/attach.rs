//! Step 11 of 12: attach the tenant's Pleo credential. API keys and unmanaged tokens: one
//! header clone, then straight on (no allocation, no await). Managed OAuth:
//! ask the session for a token (lock-free unless a refresh is needed), and if
//! Pleo answers 401, refresh once and retry once, when the request body was
//! small enough to keep (`limits.retry_body_bytes`). A larger body has
//! already streamed to Pleo, so Pleo's 401 goes back as it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{self, Kept, RequestBody};
use crate::credential::refresh::OAuthSession;
use crate::credential::Credential;
use crate::error::{ErrorCode, GatewayError};
use crate::proxy::context::Routed;
use crate::proxy::routes::{CompanyIdTo, Idle, Tenant};
use crate::upstream::ResponseBody;
use crate::BoxError;

#[derive(Clone, Copy, Debug, Default)]
pub struct AttachLayer;

impl<S> Layer<S> for AttachLayer {
    type Service = Attach<S>;
    fn layer(&self, inner: S) -> Attach<S> {
        Attach { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Attach<S> {
    inner: S,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

pin_project! {
    /// Static credentials go straight on (the inner future, no allocation);
    /// managed OAuth and refusals are boxed.
    #[project = EitherProj]
    #[derive(Debug)]
    pub enum Either<L, R> {
        Left { #[pin] inner: L },
        Right { #[pin] inner: R },
    }
}

impl<L, R, T> Future for Either<L, R>
where
    L: Future<Output = T>,
    R: Future<Output = T>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project() {
            EitherProj::Left { inner } => inner.poll(cx),
            EitherProj::Right { inner } => inner.poll(cx),
        }
    }
}

/// What the credential step does for a tenant: put a header on, or ask
/// the OAuth session for one. Pure: `explain` gives the same answer.
#[derive(Debug)]
pub enum Credentialed<'a> {
    Header(HeaderValue),
    Session(&'a Arc<OAuthSession>),
}

/// The tenant's credential, or why it has none to give: an onboarded key
/// not there yet, or a key Pleo refused (`credential_unavailable`).
pub fn credential(tenant: &Tenant) -> Result<Credentialed<'_>, GatewayError> {
    if let Some(idle) = tenant.install.as_ref().and_then(|i| i.idle.map(|idle| (i, idle))) {
        return Err(idle_install(&tenant.id, idle.0, idle.1));
    }
    let authorization = match &tenant.credential {
        Credential::Static { authorization, .. } => authorization.clone(),
        Credential::Connected { slot } => match slot.get() {
            Some(key) => key.authorization.clone(),
            None => return Err(not_connected(&tenant.id)),
        },
        Credential::OAuth { session, .. } => return Ok(Credentialed::Session(session)),
    };
    if tenant.check.refuses() {
        return Err(tenant.check.refusal(&tenant.id));
    }
    Ok(Credentialed::Header(authorization))
}

impl<S> Service<Routed<Incoming>> for Attach<S>
where
    S: Service<Routed<RequestBody>, Response = Response<ResponseBody>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = Either<S::Future, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Routed<Incoming>) -> Self::Future {
        let authorization = match credential(&req.tenant) {
            Ok(Credentialed::Header(authorization)) => authorization,
            Ok(Credentialed::Session(session)) => {
                let session = session.clone();
                // Take the service that was made ready; leave a clone behind.
                let inner = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, inner);
                return Either::Right { inner: Box::pin(with_session(inner, session, req)) };
            }
            Err(err) => return Either::Right { inner: Box::pin(std::future::ready(Err(err.into()))) },
        };
        req.req.headers_mut().insert(header::AUTHORIZATION, authorization);
        if let Some(to) = &req.tenant.company_id {
            add_company_id(&req.tenant, to, &mut req.req);
        }
        let (max, pause) = (req.routes.max_request_body_bytes, req.routes.body_read_timeout);
        Either::Left { inner: self.inner.call(req.map(|b| RequestBody::streaming(b, max, pause))) }
    }
}

/// The 503 of a `source: connection` tenant nobody has connected yet.
fn idle_install(tenant: &str, install: &crate::proxy::routes::TenantInstall, idle: Idle) -> GatewayError {
    let app = &install.record.app;
    match idle {
        Idle::Uninstalled => GatewayError::new(ErrorCode::TenantUninstalled)
            .with_detail(format!("tenant `{tenant}` (app `{app}`) was uninstalled.")),
        Idle::AppRemoved => GatewayError::new(ErrorCode::CredentialUnavailable).with_detail(format!(
            "tenant `{tenant}` was installed through app `{app}`, which is no longer in the gateway's config (or \
             no longer in the install's environment and auth model): restore the app in `apps`."
        )),
    }
}

fn not_connected(tenant: &str) -> GatewayError {
    GatewayError::new(ErrorCode::CredentialUnavailable).with_detail(format!(
        "tenant `{tenant}` is not connected yet: send a connect link (`pleo-gateway link {tenant}`, or POST \
         /api/tenants/{tenant}/connect-links on the admin listener) to the customer's Pleo admin."
    ))
}

/// The operator's opt-in (`company_id_header`, `company_id_query`): the
/// company id the key check found, for apps that do not know it. Without a
/// known id the request goes as it is (Pleo then says what is missing).
/// A query parameter the app already sent is left alone.
fn add_company_id<B>(tenant: &Tenant, to: &CompanyIdTo, req: &mut Request<B>) {
    let Some(id) = tenant.check.company_id() else {
        tracing::debug!(tenant = %tenant.id, "company id not known yet; not added");
        return;
    };
    if let (Some(name), Ok(value)) = (&to.header, HeaderValue::from_str(&id)) {
        req.headers_mut().insert(name.clone(), value);
    }
    if let Some(param) = &to.query {
        let uri = req.uri();
        let query = uri.query().unwrap_or("");
        if form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == **param) {
            return;
        }
        // The id was checked to be [A-Za-z0-9-] when parsed: no escaping needed.
        let sep = if query.is_empty() { "" } else { "&" };
        let pq = format!("{}?{query}{sep}{param}={id}", uri.path());
        if let Ok(pq) = http::uri::PathAndQuery::try_from(pq) {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(u) = http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
}

async fn with_session<S>(
    mut inner: S,
    session: Arc<OAuthSession>,
    req: Routed<Incoming>,
) -> Result<Response<ResponseBody>, BoxError>
where
    S: Service<Routed<RequestBody>, Response = Response<ResponseBody>, Error = BoxError>,
{
    let authorization = session.authorization().await?;
    let (max, pause) = (req.routes.max_request_body_bytes, req.routes.body_read_timeout);
    let (mut head, body, context) = req.into_parts();
    head.headers.insert(header::AUTHORIZATION, authorization.clone());
    let kept = body::keep_if_small(body, session.retry_body_bytes(), max, pause).await.map_err(|e| {
        if body::is_too_large(&*e) {
            GatewayError::new(ErrorCode::RequestBodyTooLarge)
        } else if body::is_timed_out(&*e) {
            GatewayError::new(ErrorCode::RequestBodyTimeout)
        } else {
            GatewayError::new(ErrorCode::UpstreamUnavailable)
                .with_source(format!("reading the request body failed: {e}"))
        }
    })?;
    let bytes = match kept {
        Kept::TooLarge(streaming) => return inner.call(context.with(Request::from_parts(head, streaming))).await,
        Kept::Whole(bytes) => bytes,
    };

    // Keep what a second attempt needs: the whole head (extensions too).
    let retry_head = {
        let mut r = Request::new(());
        *r.method_mut() = head.method.clone();
        *r.uri_mut() = head.uri.clone();
        *r.version_mut() = head.version;
        *r.headers_mut() = head.headers.clone();
        *r.extensions_mut() = head.extensions.clone();
        r
    };
    let first = inner.call(context.with(Request::from_parts(head, RequestBody::kept(bytes.clone())))).await?;
    if first.status() != StatusCode::UNAUTHORIZED {
        return Ok(first);
    }
    let renewed: HeaderValue = match session.after_rejection(&authorization).await {
        Ok(Some(v)) => v,
        // Not worth a rotation (fresh token, or a forced refresh just ran).
        Ok(None) => {
            tracing::debug!(tenant = %session.tenant, "Pleo answered 401; no forced refresh (rate limited)");
            return Ok(first);
        }
        // No better token to be had: Pleo's answer stands.
        Err(e) => {
            tracing::warn!(tenant = %session.tenant, error = %e, "Pleo rejected the access token and no new one is available");
            return Ok(first);
        }
    };
    drop(first);
    tracing::info!(tenant = %session.tenant, "Pleo rejected the access token; retrying once with a refreshed one");
    let (mut head, ()) = retry_head.into_parts();
    head.headers.insert(header::AUTHORIZATION, renewed);
    head.extensions.insert(super::proxy::Resend(1));
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(context.with(Request::from_parts(head, RequestBody::kept(bytes)))).await
}
