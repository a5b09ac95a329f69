//! `pleo-gateway explain`: the dry run of one request through the routing
//! table the config makes (no session refreshes, nothing sent). Keys
//! onboarded on links are read from the store, so the answer matches the
//! running gateway's.

use std::io::Write;
use std::sync::Arc;

use super::CommandError;
use crate::config::Config;
use crate::proxy::explain;
use crate::proxy::routes::Routes;

pub async fn explain(
    config: &Config,
    method: &str,
    url: &str,
    headers: &[String],
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let mut parsed = Vec::new();
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(CommandError::Usage(format!("-H `{h}`: expected `Name: value`")));
        };
        parsed.push((name.trim().to_string(), value.trim().to_string()));
    }
    let req = explain::request(method, url, &parsed).map_err(|e| CommandError::Usage(e.to_string()))?;
    let failed = |e: String| CommandError::Unavailable(e);
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(crate::metrics::Metrics::register(&registry, false).map_err(|e| failed(e.to_string()))?);
    let upstreams = crate::upstream::Upstreams::build(config).map_err(|e| failed(e.to_string()))?;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let store = crate::state::open_for_command(config).map_err(failed)?;
    let sessions = Arc::new(crate::credential::Sessions::offline(store.clone(), metrics.clone(), stopped));
    let onboarding =
        crate::onboarding::Onboarding::new(config, store.clone(), sessions.clone(), metrics.onboardings_total.clone());
    let installs: Vec<Arc<crate::state::InstallRecord>> = if config.apps.is_empty() {
        Vec::new()
    } else {
        store.installs(&[]).await.map_err(|e| failed(e.to_string()))?
    };
    if config.tenants.values().any(|t| t.auth.from_connection()) || !installs.is_empty() {
        onboarding.load().await.map_err(|e| failed(e.to_string()))?;
    }
    // Tenants installs made are explained like any other.
    let routes = Arc::new(Routes::build_with(config, &upstreams, &metrics, &sessions, None, &installs, false));
    let _ = write!(out, "{}", explain::explain(&routes, req).text());
    Ok(())
}
