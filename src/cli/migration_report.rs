//! `pleo-gateway migration-report`: the running gateway's `GET /migration` as a table.

use std::io::Write;

use super::CommandError;

/// `pleo-gateway migration-report`: the running gateway's `GET /migration`
/// (on `admin`, with the token from PLEO_GATEWAY_ADMIN_TOKEN), as a table.
pub async fn migration_report(admin: &str, out: &mut impl Write) -> Result<(), CommandError> {
    use http_body_util::BodyExt;
    let failed = |m: String| CommandError::Unavailable(m);
    let uri: http::Uri = format!("http://{admin}/migration")
        .parse()
        .map_err(|_| CommandError::Usage(format!("`{admin}` is not an address")))?;
    let mut req =
        http::Request::get(uri).body(http_body_util::Full::new(bytes::Bytes::new())).expect("a valid request");
    if let Ok(token) = std::env::var("PLEO_GATEWAY_ADMIN_TOKEN") {
        let value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| CommandError::Usage("PLEO_GATEWAY_ADMIN_TOKEN is not a valid token".into()))?;
        req.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let resp =
        client.request(req).await.map_err(|e| failed(format!("cannot reach the admin listener {admin}: {e}")))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| failed(e.to_string()))?.to_bytes();
    if status == http::StatusCode::UNAUTHORIZED {
        return Err(CommandError::Usage(
            "the admin listener wants an admin token: set PLEO_GATEWAY_ADMIN_TOKEN".into(),
        ));
    }
    if !status.is_success() {
        return Err(failed(format!("GET /migration answered {status}")));
    }
    let report: serde_json::Value = serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
    let ms = |v: &serde_json::Value| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.as_u64().unwrap_or(0));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    let mut rows = vec![[
        "CLIENT".to_string(),
        "WHAT".into(),
        "TEMPLATE / APP".into(),
        "COUNT".into(),
        "TENANTS".into(),
        "FIRST SEEN".into(),
        "LAST SEEN".into(),
    ]];
    let empty = serde_json::Map::new();
    for (client, c) in report["clients"].as_object().unwrap_or(&empty) {
        for f in c["not_found"].as_array().into_iter().flatten() {
            let tenants: Vec<&str> = f["tenants"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
            rows.push([
                client.clone(),
                format!("Pleo {}", f["status"]),
                f["template"].as_str().unwrap_or_default().to_string(),
                f["count"].to_string(),
                tenants.join(","),
                ms(&f["first_seen_ms"]),
                ms(&f["last_seen_ms"]),
            ]);
        }
        for (app, seen) in c["legacy_tokens"].as_object().unwrap_or(&empty) {
            rows.push([
                client.clone(),
                "legacy token".into(),
                app.clone(),
                seen["count"].to_string(),
                "-".into(),
                ms(&seen["first_seen_ms"]),
                ms(&seen["last_seen_ms"]),
            ]);
        }
    }
    if rows.len() == 1 {
        let _ = writeln!(
            out,
            "Nothing to report: Pleo has answered no request with 404 or 405, and no legacy token was refused."
        );
        return Ok(());
    }
    let _ = write!(out, "{}", crate::config::table(&rows));
    Ok(())
}
