//! `deploy/monitoring/`: the alert rules checked and unit-tested by Debian's
//! `promtool`, the Kubernetes `PrometheusRule` kept equal to them, and every
//! dashboard query sent to a real Prometheus that scraped a gateway under
//! load: each must answer, and the panels for the traffic sent must have data.
//!
//! Without Debian's `prometheus` package the tests that need it are skipped
//! with a message; `.ci/run` installs it and sets
//! PLEO_GATEWAY_REQUIRE_PROMETHEUS=1, which turns a missing binary into a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring").join(file)
}

fn yaml(file: &str) -> serde_json::Value {
    yaml_serde::from_str(&std::fs::read_to_string(monitoring(file)).unwrap()).unwrap()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap()).unwrap()
}

/// `promtool` or `prometheus` on PATH, or None (skipped) unless required.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let found =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()));
    if found.is_none() {
        if std::env::var_os("PLEO_GATEWAY_REQUIRE_PROMETHEUS").is_some() {
            panic!("{name} is required (PLEO_GATEWAY_REQUIRE_PROMETHEUS) but not on PATH (apt-get install prometheus)");
        }
        eprintln!("SKIPPED {test}: {name} is not installed (apt-get install prometheus)");
    }
    found
}

/// The rules, each as (alert name, severity, rule).
fn alert_rules() -> Vec<(String, String, serde_json::Value)> {
    let rules = yaml("prometheus-rules.yaml");
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().expect("only alerting rules").to_string();
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default().to_string();
            out.push((name, severity, rule.clone()));
        }
    }
    out
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_fire_and_resolve_every_alert() {
    let Some(promtool) = tool("promtool", "promtool") else { return };
    for args in [["check", "rules", "prometheus-rules.yaml"], ["test", "rules", "prometheus-rules.test.yaml"]] {
        let out = Command::new(&promtool).args(args).current_dir(monitoring("")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

#[test]
fn every_alert_says_what_to_do_has_a_severity_and_is_unit_tested_firing_and_resolved() {
    let rules = alert_rules();
    assert!(rules.len() >= 11, "{} rules", rules.len());
    for (name, severity, rule) in &rules {
        assert!(["critical", "warning", "info"].contains(&severity.as_str()), "{name}: severity {severity:?}");
        let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
        let description = rule["annotations"]["description"].as_str().unwrap_or_default();
        assert!(summary.len() > 20, "{name}: a summary");
        assert!(description.len() > 100, "{name}: a description that says what to do");
    }
    // Each alert (each severity of it) fires in a unit test, and some later
    // evaluation of the same test finds it resolved.
    let tests = yaml("prometheus-rules.test.yaml");
    let mut fired: BTreeSet<(String, String)> = BTreeSet::new();
    let mut resolved: BTreeSet<String> = BTreeSet::new();
    for test in tests["tests"].as_array().unwrap() {
        let mut last_firing: BTreeMap<String, Duration> = BTreeMap::new();
        let mut cases: Vec<_> = test["alert_rule_test"].as_array().unwrap().iter().collect();
        let at = |c: &serde_json::Value| humantime::parse_duration(c["eval_time"].as_str().unwrap()).unwrap();
        cases.sort_by_key(|c| at(c));
        for case in cases {
            let name = case["alertname"].as_str().unwrap().to_string();
            let alerts = case["exp_alerts"].as_array().unwrap();
            for a in alerts {
                fired.insert((name.clone(), a["exp_labels"]["severity"].as_str().unwrap().to_string()));
            }
            if !alerts.is_empty() {
                last_firing.insert(name, at(case));
            } else if last_firing.contains_key(&name) {
                resolved.insert(name);
            }
        }
    }
    for (name, severity, _) in &rules {
        assert!(fired.contains(&(name.clone(), severity.clone())), "{name} ({severity}) never fires in a unit test");
        assert!(resolved.contains(name), "{name} never resolves in a unit test");
    }
}

#[test]
fn the_prometheus_rule_for_kubernetes_holds_the_same_groups() {
    let operator = yaml("prometheusrule.yaml");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(operator["spec"]["groups"], yaml("prometheus-rules.yaml")["groups"]);
}

#[test]
fn the_service_monitor_scrapes_the_services_admin_port() {
    let monitor = yaml("servicemonitor.yaml");
    let k8s = |f: &str| -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes").join(f);
        yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let service = k8s("service.yaml");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "the Service carries the selected label {k}");
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = endpoint["port"].as_str().unwrap();
    let named = service["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == port);
    assert!(named.is_some_and(|p| p["port"] == 9464), "the Service's {port} port is admin_listen's");
}

/// Metric names in a PromQL text, without the histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("pleo_gateway_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

/// Every panel's queries, as (panel title, expr).
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((panel["title"].as_str().unwrap().to_string(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[test]
fn the_dashboard_and_the_rules_read_only_documented_metrics() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md")).unwrap();
    let rules = std::fs::read_to_string(monitoring("prometheus-rules.yaml")).unwrap();
    let mut used = metric_names(&rules);
    for (_, expr) in dashboard_queries() {
        used.extend(metric_names(&expr));
    }
    assert!(used.len() > 20, "{used:?}");
    for name in used {
        assert!(docs.contains(&format!("`{name}`")), "{name} is not in docs/metrics.md");
    }
    // Template variables: tenant, environment and auth model (and the instance).
    let vars: Vec<_> = dashboard()["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    for v in ["tenant", "environment", "auth_model", "instance"] {
        assert!(vars.iter().any(|n| n == v), "variable {v}");
    }
}

/// A Prometheus server on a spare loopback port, scraping `target`; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(bin: &Path, target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "global: {{ scrape_interval: 250ms, scrape_timeout: 200ms }}\nscrape_configs:\n  - job_name: pleo-gateway\n    static_configs: [{{ targets: ['{target}'] }}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus { child, addr: format!("127.0.0.1:{port}"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = format!("http://{}/-/ready", p.addr);
        while !http_client().get(ready.parse().unwrap()).await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "prometheus never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Targets are handed to the scraper a few seconds after the start:
        // wait for the first scrape, so the load lands between scrapes.
        while p.api("/api/v1/query", &[("query", "up == 1")]).await["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            assert!(Instant::now() < deadline, "prometheus never scraped the gateway");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let addr = self.addr.parse().unwrap();
        let (_, body) = admin_get(addr, &format!("{path}?{query}")).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

/// What Grafana would put in place of the dashboard's variables, with "All" selected.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace("$instance", ".*")
        .replace("$environment", ".*")
        .replace("$auth_model", ".*")
        .replace("$tenant", ".*")
}

/// Panels the test's load does not feed: the PostgreSQL store, connect links
/// and installs, TLS certificates (the demo serves plain HTTP).
const NOT_FED_BY_THE_LOAD: [&str; 3] =
    ["Store up and operation latency (p95)", "Connect-link and install results", "Certificate expiry"];

/// The shipped gateway.yaml (the demo: in-process sandbox, file store),
/// moved to spare ports, its files and state made absolute.
async fn start_demo(dir: &Path) -> pleo_gateway::gateway::Running {
    let root = env!("CARGO_MANIFEST_DIR");
    let (staging, production, connect) = (free_port(), free_port(), free_port());
    let yaml = std::fs::read_to_string(Path::new(root).join("gateway.yaml"))
        .unwrap()
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9464", "127.0.0.1:0")
        .replace("127.0.0.1:8901", &format!("127.0.0.1:{staging}"))
        .replace("127.0.0.1:8902", &format!("127.0.0.1:{production}"))
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{connect}"))
        .replace("file: sandbox/", &format!("file: {root}/sandbox/"))
        .replace("dir: ./state", &format!("dir: {}", dir.join("state").display()));
    start_gateway(&yaml, dir).await
}

#[tokio::test]
async fn every_dashboard_query_answers_from_a_real_prometheus_and_the_traffic_panels_have_data() {
    let Some(bin) = tool("prometheus", "the dashboard queries") else { return };
    let promtool = tool("promtool", "the dashboard queries").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = start_demo(dir.path()).await;
    let prom = Prometheus::start(&bin, gw.admin_addr).await;
    let client = http_client();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut req = http::Request::get(format!("http://{}{path}", gw.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Default::default()).unwrap();
        let client = client.clone();
        async move { client.request(req).await.unwrap().status().as_u16() }
    };

    // A short load of every kind the traffic panels show: each auth model,
    // Pleo's 404 and 5xx, a legacy token, a refusal.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for tenant in ["acme", "globex", "initech"] {
            assert_eq!(get("/v2/employees", &[("x-pleo-tenant", tenant)]).await, 200, "{tenant}");
        }
        assert_eq!(get("/sandbox/status/404", &[("x-pleo-tenant", "initech")]).await, 404);
        assert_eq!(get("/sandbox/status/500", &[("x-pleo-tenant", "acme")]).await, 500);
        assert_eq!(get("/v2/x", &[("authorization", "Bearer legacy-openapi-token")]).await, 401);
        assert_eq!(get("/v2/x", &[("x-pleo-tenant", "nobody")]).await, 403);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What Prometheus scraped is valid exposition text.
    let metrics = admin_get(gw.admin_addr, "/metrics").await.1;
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics: {}", String::from_utf8_lossy(&out.stderr));
    // Enough scrapes after the load for every rate.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = prom.api("/api/v1/query", &[("query", "count_over_time(pleo_gateway_in_flight_requests[1m])")]).await;
        let n: f64 = j["data"]["result"][0]["value"][1].as_str().map_or(0.0, |v| v.parse().unwrap());
        if n >= 16.0 {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus scraped {n} times: {j}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Each panel: whether any of its queries returned data.
    let mut has_data: BTreeMap<String, bool> = BTreeMap::new();
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "{} queries", queries.len());
    for (title, expr) in &queries {
        let sent = as_grafana_sends(expr);
        let j = prom.api("/api/v1/query", &[("query", sent.as_str())]).await;
        assert_eq!(j["status"], "success", "{title}: {sent}: {j}");
        let data = j["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
        *has_data.entry(title.clone()).or_default() |= data;
    }
    for (title, data) in &has_data {
        if !NOT_FED_BY_THE_LOAD.contains(&title.as_str()) {
            assert!(data, "{title}: no data after the load");
        }
    }
    // The variables' values, as Grafana's label_values() asks for them.
    for v in dashboard()["templating"]["list"].as_array().unwrap() {
        let Some(def) = v["definition"].as_str() else { continue };
        let inner = def.strip_prefix("label_values(").and_then(|d| d.strip_suffix(')')).unwrap();
        let (metric, label) = inner.split_once(", ").unwrap();
        let j = prom.api(&format!("/api/v1/label/{label}/values"), &[("match[]", metric)]).await;
        assert_eq!(j["status"], "success", "{def}: {j}");
        assert!(!j["data"].as_array().unwrap().is_empty(), "{def}: no values");
    }
    drop(prom);
    gw.shutdown().await;
}
