//! Where each legacy app stands (docs/migration.md): Pleo's 404 and 405
//! answers, counted per normalised path template (ids, numbers and UUIDs
//! folded to `{id}`, the query dropped), per client and per tenant, and the
//! legacy tokens each client still sends. `GET /migration` shows it, and
//! `pleo_gateway_upstream_not_found_total{template}` counts it.
//!
//! Memory and series are bounded: the first `max_templates` templates get
//! their own entry and series, every later one counts as `other`; clients
//! and tenants are bounded by the config, and unknown clients fold into
//! `anonymous`. Only 404/405 answers and legacy refusals come here, never
//! the request path of a request that worked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;

/// The label for templates past the bound.
pub const OTHER: &str = "other";
/// A template longer than this is cut (a path can be long; a label should not be).
const MAX_TEMPLATE_CHARS: usize = 200;

/// `/v1/expenses/3f2b...-...?x=1` -> `/v1/expenses/{id}`.
pub fn template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::with_capacity(path.len().min(MAX_TEMPLATE_CHARS));
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if is_id(seg) { "{id}" } else { seg });
        if out.len() > MAX_TEMPLATE_CHARS {
            let mut cut = MAX_TEMPLATE_CHARS;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Numbers, UUIDs, long hex strings, and long tokens with digits in them
/// (`exp_8f3k2j4h5g6f`): values, not names.
fn is_id(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let b = seg.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() {
        return true;
    }
    let hexish = b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
    if hexish && b.len() >= 12 && digits > 0 {
        return true;
    }
    let tokenish = b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
    tokenish && b.len() >= 16 && digits > 0
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// When something was first and last seen, and how often.
#[derive(Clone, Debug, Serialize)]
pub struct Seen {
    pub count: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

impl Seen {
    fn new(now: u64) -> Seen {
        Seen { count: 0, first_seen_ms: now, last_seen_ms: now }
    }

    fn bump(&mut self, now: u64) {
        self.count += 1;
        self.last_seen_ms = now;
    }
}

/// One template's failures for one client.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub template: String,
    /// 404 or 405, as Pleo answered.
    pub status: u16,
    pub tenants: Vec<String>,
    #[serde(flatten)]
    pub seen: Seen,
}

#[derive(Debug, Default)]
struct ClientState {
    failures: BTreeMap<(String, u16), (Seen, std::collections::BTreeSet<String>)>,
    legacy: BTreeMap<String, Seen>,
}

#[derive(Debug, Default)]
struct State {
    admitted: HashSet<String>,
    clients: BTreeMap<String, ClientState>,
}

/// What `GET /migration` answers, per client.
#[derive(Debug, Serialize)]
pub struct Report {
    pub clients: BTreeMap<String, ClientReport>,
    pub max_templates: usize,
}

#[derive(Debug, Serialize)]
pub struct ClientReport {
    pub not_found: Vec<Failure>,
    pub legacy_tokens: BTreeMap<String, Seen>,
}

#[derive(Debug)]
pub struct MigrationLog {
    counter: IntCounterVec,
    max_templates: std::sync::atomic::AtomicUsize,
    state: Mutex<State>,
}

impl MigrationLog {
    pub fn register(registry: &Registry, max_templates: usize) -> prometheus::Result<MigrationLog> {
        let counter = IntCounterVec::new(
            Opts::new(
                "pleo_gateway_upstream_not_found_total",
                "Pleo answered 404 or 405, by normalised path template (ids folded to {id}; past the bound, \
                 `other`): paths a legacy app calls that the External API does not have.",
            ),
            &["template"],
        )?;
        registry.register(Box::new(counter.clone()))?;
        Ok(MigrationLog {
            counter,
            max_templates: std::sync::atomic::AtomicUsize::new(max_templates),
            state: Mutex::default(),
        })
    }

    /// A reload may change the bound; templates already admitted stay.
    pub fn set_max_templates(&self, max: usize) {
        self.max_templates.store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pleo answered `status` (404/405) to `path` for `client` and `tenant`.
    pub fn not_found(&self, client: Option<&str>, tenant: &str, path: &str, status: u16) {
        let t = template(path);
        let now = now_ms();
        let max = self.max_templates.load(std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let label = if state.admitted.contains(&t) {
            t
        } else if state.admitted.len() < max {
            state.admitted.insert(t.clone());
            t
        } else {
            OTHER.to_string()
        };
        let entry = state.clients.entry(client.unwrap_or("anonymous").to_string()).or_default();
        let (seen, tenants) =
            entry.failures.entry((label.clone(), status)).or_insert_with(|| (Seen::new(now), Default::default()));
        seen.bump(now);
        tenants.insert(tenant.to_string());
        drop(state);
        self.counter.with_label_values(&[&label]).inc();
    }

    /// A legacy token (`legacy_tokens` name, or `unnamed`) was refused for `client`.
    pub fn legacy(&self, client: Option<&str>, app: &str) {
        let now = now_ms();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let entry = state.clients.entry(client.unwrap_or("anonymous").to_string()).or_default();
        entry.legacy.entry(app.to_string()).or_insert_with(|| Seen::new(now)).bump(now);
    }

    pub fn report(&self) -> Report {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let clients = state
            .clients
            .iter()
            .map(|(name, c)| {
                let mut not_found: Vec<Failure> = c
                    .failures
                    .iter()
                    .map(|((template, status), (seen, tenants))| Failure {
                        template: template.clone(),
                        status: *status,
                        tenants: tenants.iter().cloned().collect(),
                        seen: seen.clone(),
                    })
                    .collect();
                not_found.sort_by(|a, b| b.seen.count.cmp(&a.seen.count).then(a.template.cmp(&b.template)));
                (name.clone(), ClientReport { not_found, legacy_tokens: c.legacy.clone() })
            })
            .collect();
        Report { clients, max_templates: self.max_templates.load(std::sync::atomic::Ordering::Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fold_and_names_stay() {
        assert_eq!(template("/v1/expenses/12345"), "/v1/expenses/{id}");
        assert_eq!(
            template("/v1/expenses/3f2b9c1e-8a7d-4e6f-9b0a-1c2d3e4f5a6b/receipts?x=1"),
            "/v1/expenses/{id}/receipts"
        );
        assert_eq!(template("/v1/users/usr_8f3k2j4h5g6f7d8s"), "/v1/users/{id}");
        assert_eq!(template("/v2/employees"), "/v2/employees");
        assert_eq!(template("/v1/export-jobs"), "/v1/export-jobs");
        assert_eq!(template("/v3/cost-centers/deadbeefcafe42"), "/v3/cost-centers/{id}");
        assert_eq!(template(""), "/");
        assert!(template(&"/a".repeat(500)).chars().count() <= MAX_TEMPLATE_CHARS + 1);
    }

    #[test]
    fn ten_thousand_ids_are_one_series_and_templates_are_bounded() {
        let registry = Registry::new();
        let log = MigrationLog::register(&registry, 50).unwrap();
        for i in 0..10_000 {
            log.not_found(Some("erp"), "acme", &format!("/v1/expenses/{i}"), 404);
        }
        for i in 0..1_000 {
            log.not_found(
                None,
                "acme",
                &format!("/v1/thing{}x/list", char::from(b'a' + (i % 26) as u8).to_string().repeat(1 + i / 26)),
                404,
            );
        }
        let series: Vec<String> = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "pleo_gateway_upstream_not_found_total")
            .flat_map(|f| f.get_metric().iter().map(|m| m.get_label()[0].value().to_string()).collect::<Vec<_>>())
            .collect();
        assert!(series.len() <= 51, "{} series", series.len());
        assert!(series.contains(&"/v1/expenses/{id}".to_string()) && series.contains(&OTHER.to_string()));
        let report = log.report();
        let erp = &report.clients["erp"].not_found;
        assert_eq!((erp.len(), erp[0].seen.count), (1, 10_000));
        assert!(report.clients["anonymous"].not_found.len() <= 50);
    }
}
