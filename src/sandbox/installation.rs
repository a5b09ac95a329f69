//! The sandbox's installation resource, shaped as Pleo's API reference
//! describes it: `GET`, `POST` and `PUT /v1/installations/me`, and
//! `POST /v1/installations/me:activate`. One installation per company,
//! created `ACTIVATED` on first sight; tests change its status, error code
//! or even its `resource` through [`super::Sandbox`] hooks.

use std::collections::HashMap;

use http::{Method, StatusCode};
use sha2::{Digest, Sha256};

/// Pleo's installation statuses.
pub const STATUSES: [&str; 5] = ["ACTIVATED", "INACTIVE", "AUTHORIZED", "PENDING_INTEGRATION", "ERROR"];
const ERROR_CODES: [&str; 2] = ["NOT_ENTITLED", "AUTH_ERROR"];

#[derive(Clone, Debug)]
pub struct Installation {
    id: String,
    application_id: String,
    pub resource: String,
    pub status: String,
    pub error_code: Option<String>,
    metadata: serde_json::Value,
    created_at: String,
    updated_at: String,
}

/// A stable UUID-shaped id from a seed (the sandbox has no clock of record).
fn uuid_from(seed: &str) -> String {
    let h = hex::encode(&Sha256::digest(seed.as_bytes())[..16]);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl Installation {
    pub fn new(company: &str, environment: &str) -> Installation {
        Installation {
            id: uuid_from(&format!("installation:{environment}:{company}")),
            application_id: uuid_from(&format!("application:{environment}")),
            resource: format!("urn:pleo:company:{company}"),
            status: "ACTIVATED".into(),
            error_code: None,
            metadata: serde_json::json!({}),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "id": self.id,
            "applicationId": self.application_id,
            "resource": self.resource,
            "status": self.status,
            "metadata": self.metadata,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        });
        // Pleo sends errorCode only for an installation that is not active.
        if let Some(code) = &self.error_code {
            doc["errorCode"] = code.as_str().into();
        }
        doc
    }

    fn touch(&mut self) {
        self.updated_at = "2026-01-02T00:00:00Z".into();
    }
}

/// One call to the installation resource by an authenticated `company`.
pub fn handle(
    installations: &mut HashMap<String, Installation>,
    environment: &str,
    company: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let bad = |why: &str| (StatusCode::BAD_REQUEST, serde_json::json!({ "error": "bad_request", "message": why }));
    let input: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return bad("the body is not JSON"),
        }
    };
    let status = input.get("status").and_then(|s| s.as_str());
    if status.is_some_and(|s| !STATUSES.contains(&s)) {
        return bad("status must be one of ACTIVATED, INACTIVE, AUTHORIZED, PENDING_INTEGRATION, ERROR");
    }
    let error_code = input.get("errorCode").and_then(|s| s.as_str());
    if error_code.is_some_and(|c| !ERROR_CODES.contains(&c)) {
        return bad("errorCode must be NOT_ENTITLED or AUTH_ERROR");
    }
    let entry = installations.entry(company.to_string());
    match (method, path) {
        (&Method::GET, "/v1/installations/me") => {
            let inst = entry.or_insert_with(|| Installation::new(company, environment));
            (StatusCode::OK, inst.to_json())
        }
        (&Method::POST, "/v1/installations/me") => {
            let mut inst = Installation::new(company, environment);
            inst.status = status.unwrap_or("ACTIVATED").to_string();
            if let Some(m) = input.get("metadata") {
                inst.metadata = m.clone();
            }
            let doc = inst.to_json();
            entry.insert_entry(inst);
            (StatusCode::CREATED, doc)
        }
        (&Method::PUT, "/v1/installations/me") => {
            let inst = entry.or_insert_with(|| Installation::new(company, environment));
            if let Some(s) = status {
                inst.status = s.to_string();
            }
            inst.error_code = error_code.map(str::to_string);
            if let Some(m) = input.get("metadata") {
                inst.metadata = m.clone();
            }
            inst.touch();
            (StatusCode::OK, inst.to_json())
        }
        (&Method::POST, "/v1/installations/me:activate") => {
            let inst = entry.or_insert_with(|| Installation::new(company, environment));
            inst.status = "ACTIVATED".into();
            inst.error_code = None;
            inst.touch();
            (StatusCode::OK, inst.to_json())
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({ "error": "method_not_allowed" })),
    }
}
