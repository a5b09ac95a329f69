//! Pleo's installation document (`GET /v1/installations/me`), as the API
//! reference defines it:
//!
//! ```json
//! { "id": "<uuid>", "applicationId": "<uuid>",
//!   "resource": "urn:pleo:company:<company uuid>",
//!   "status": "ACTIVATED | INACTIVE | AUTHORIZED | PENDING_INTEGRATION | ERROR",
//!   "errorCode": "NOT_ENTITLED | AUTH_ERROR", "metadata": { }, ... }
//! ```
//!
//! The company id comes from the `resource` URN and nowhere else; anything
//! unexpected there is reported in a note, never guessed at. The status
//! decides what the gateway makes of the tenant (`check`).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::body::RequestBody;
pub use crate::config::model::InstallationStatus as Status;
use crate::upstream::Upstream;

/// The installation endpoints the gateway calls with a tenant's credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `GET /v1/installations/me`: the document (key checks, `installation show`).
    Show,
    /// `POST /v1/installations/me:activate`.
    Activate,
    /// `DELETE /v1/installations/me`: uninstall; Pleo revokes every token of it.
    Uninstall,
}

impl Call {
    pub fn path(self) -> &'static str {
        match self {
            Call::Show => "/v1/installations/me",
            Call::Activate => "/v1/installations/me:activate",
            Call::Uninstall => "/v1/installations/me",
        }
    }
}

/// Why a call got no answer from Pleo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("bad base URL")]
    BadBaseUrl,
    #[error("cannot connect to Pleo")]
    Connect,
    #[error("the request to Pleo failed")]
    Failed,
    #[error("Pleo did not answer in time")]
    Timeout,
    #[error("Pleo's answer could not be read")]
    Unreadable,
}

/// One call with `authorization` in `up`'s environment, head and body
/// within [`super::TIMEOUT`]. `agent` says what the call is in Pleo's logs.
pub async fn call(
    up: &Upstream,
    call: Call,
    authorization: &HeaderValue,
    agent: &'static str,
) -> Result<(StatusCode, Bytes), CallError> {
    let uri = format!("{}{}", up.base, call.path()).parse().map_err(|_| CallError::BadBaseUrl)?;
    let mut req = Request::new(RequestBody::empty());
    *req.uri_mut() = uri;
    req.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
    req.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static(agent));
    match call {
        Call::Show => {}
        Call::Activate => {
            *req.method_mut() = Method::POST;
            req.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        Call::Uninstall => *req.method_mut() = Method::DELETE,
    }
    let exchange = async {
        let resp = up.client().request(req).await.map_err(|e| {
            if e.is_connect() {
                CallError::Connect
            } else {
                CallError::Failed
            }
        })?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|_| CallError::Unreadable)?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(super::TIMEOUT, exchange).await.map_err(|_| CallError::Timeout)?
}

/// What the gateway takes from an installation document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    /// The id in `resource`: a company's, or an organisation's.
    pub company_id: Option<String>,
    pub resource: Option<Resource>,
    pub status: Status,
    /// `errorCode`, as Pleo sent it (only for an installation that is not active).
    pub error_code: Option<String>,
    /// What did not look as documented, in words an operator can act on.
    pub note: Option<String>,
}

const URN: &str = "urn:pleo:company:";
const ORGANISATION_URN: &str = "urn:pleo:organization:";

/// What an installation is for: one company, or an organisation (a
/// multi-entity customer). `{company_id}` is the id either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Company,
    Organisation,
}

impl Resource {
    /// As `/tenants`, the metrics and the pages say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Company => "company",
            Resource::Organisation => "organisation",
        }
    }

    pub fn urn(self, id: &str) -> String {
        match self {
            Resource::Company => format!("{URN}{id}"),
            Resource::Organisation => format!("{ORGANISATION_URN}{id}"),
        }
    }
}

/// `urn:pleo:company:<id>` or `urn:pleo:organization:<id>`, with an id of
/// letters, digits and '-' (Pleo's are UUIDs); nothing else.
pub fn parse_resource(urn: &str) -> Option<(Resource, &str)> {
    let (kind, id) = match (urn.strip_prefix(URN), urn.strip_prefix(ORGANISATION_URN)) {
        (Some(id), _) => (Resource::Company, id),
        (_, Some(id)) => (Resource::Organisation, id),
        _ => return None,
    };
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some((kind, id))
}

/// A value from Pleo fit for a log line or a page: printable, bounded.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

pub fn parse(body: &[u8]) -> Installation {
    let unknown = |note: String| Installation {
        company_id: None,
        resource: None,
        status: Status::Unknown,
        error_code: None,
        note: Some(note),
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return unknown("Pleo's answer is not JSON, so not an installation document".into());
    };
    if !doc.is_object() {
        return unknown("Pleo's answer is not an installation document (not a JSON object)".into());
    }
    let mut notes = Vec::new();
    let (resource, company_id) = match doc.get("resource").and_then(|r| r.as_str()) {
        Some(r) => match parse_resource(r) {
            Some((kind, id)) => (Some(kind), Some(id.to_string())),
            None => {
                notes.push(format!(
                    "the installation's resource `{}` is not a company or organisation URN (expected {URN}<id> or \
                     {ORGANISATION_URN}<id>); the company id is unknown",
                    shown(r)
                ));
                (None, None)
            }
        },
        None => {
            notes.push("the installation document has no resource; the company id is unknown".into());
            (None, None)
        }
    };
    let status = match doc.get("status").and_then(|s| s.as_str()) {
        Some(s) => {
            let status = Status::parse(s);
            if status == Status::Unknown {
                notes.push(format!("Pleo reports an installation status the gateway does not know: `{}`", shown(s)));
            }
            status
        }
        None => {
            notes.push("the installation document has no status".into());
            Status::Unknown
        }
    };
    let error_code = doc.get("errorCode").and_then(|c| c.as_str()).map(shown);
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    Installation { company_id, resource, status, error_code, note }
}

/// What an error code means, for the operator.
pub fn explain_error_code(code: &str) -> &'static str {
    match code {
        "NOT_ENTITLED" => "the company is not entitled to the integration",
        "AUTH_ERROR" => "Pleo reported an authentication problem for the installation",
        _ => "see Pleo's documentation for this error code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shape() {
        let i = parse(
            br#"{"id":"a","applicationId":"b","resource":"urn:pleo:company:0b9c6a1e-1111-4c2d-9e8f-123456789abc","status":"ACTIVATED","metadata":{}}"#,
        );
        assert_eq!(i.company_id.as_deref(), Some("0b9c6a1e-1111-4c2d-9e8f-123456789abc"));
        assert_eq!((i.status, i.error_code, i.note), (Status::Activated, None, None));
        assert_eq!(i.resource, Some(Resource::Company));
        let i = parse(br#"{"resource":"urn:pleo:organization:o-1","status":"ACTIVATED"}"#);
        assert_eq!((i.company_id.as_deref(), i.resource), (Some("o-1"), Some(Resource::Organisation)));
        let i = parse(br#"{"resource":"urn:pleo:company:c1","status":"INACTIVE","errorCode":"NOT_ENTITLED"}"#);
        assert_eq!((i.status, i.error_code.as_deref()), (Status::Inactive, Some("NOT_ENTITLED")));
    }

    #[test]
    fn what_does_not_fit_is_reported_not_guessed() {
        for body in [
            &br#"{"resource":"urn:pleo:employee:e1","status":"ACTIVATED"}"#[..],
            br#"{"resource":"urn:pleo:company:","status":"ACTIVATED"}"#,
            br#"{"resource":"urn:pleo:company:a/b","status":"ACTIVATED"}"#,
            br#"{"companyId":"c1","status":"ACTIVATED"}"#,
        ] {
            let i = parse(body);
            assert_eq!(i.company_id, None, "{}", String::from_utf8_lossy(body));
            assert!(i.note.unwrap().contains("company id is unknown"));
        }
        let i = parse(br#"{"resource":"urn:pleo:company:c1","status":"SOMETHING_NEW"}"#);
        assert_eq!(i.status, Status::Unknown);
        assert!(i.note.unwrap().contains("SOMETHING_NEW"));
        assert_eq!(parse(b"not json").status, Status::Unknown);
    }
}
