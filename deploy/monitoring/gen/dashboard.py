"""Writes grafana-dashboard.json: the panels, their PromQL and the variables.
Edit here, run it (python3 deploy/monitoring/gen/dashboard.py), commit both;
tests/it/monitoring.rs checks every query against a real Prometheus."""
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
import json
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'
T = I + ', environment=~"$environment", auth_model=~"$auth_model", tenant=~"$tenant"'
R = "$__rate_interval"
panels = []
y = 0
def row(title):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
    y += 1
x = 0
def panel(title, targets, unit="short", kind="timeseries", w=12, h=8, desc=None):
    global x, y
    if x + w > 24:
        x = 0; y += h
    p = {"type": kind, "title": title, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}} if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
         "targets": [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i)} for i, (e, l) in enumerate(targets)]}
    if desc:
        p["description"] = desc
    panels.append(p)
    x += w
    if x >= 24:
        x = 0; y += h
def newrow(title):
    global x, y
    if x:
        x = 0; y += 8
    row(title)

newrow("Traffic")
panel("Requests by status and auth model", [(f'sum by (auth_model, status) (rate(pleo_gateway_requests_total{{{T}}}[{R}]))', "{{auth_model}} {{status}}")], "reqps",
      desc="Requests answered for a resolved tenant (Pleo's answers and the gateway's own), per second.")
panel("Gateway errors by code", [(f'sum by (reason) (rate(pleo_gateway_refused_total{{{I}}}[{R}])) > 0', "{{reason}}")], "reqps",
      desc="Requests the gateway answered itself, by error code (docs/errors.md). Refusals before a tenant is known are only here.")
panel("Pleo's 4xx and 5xx by status and auth model", [
    (f'sum by (auth_model, status) (rate(pleo_gateway_requests_total{{{T}, status=~"4..|5.."}}[{R}]))', "{{auth_model}} {{status}}"),
    (f'sum by (auth_model) (rate(pleo_gateway_upstream_5xx_total{{{T}}}[{R}]))', "{{auth_model}} 5xx from Pleo")], "reqps")
panel("Upstream 5xx ratio", [
    (f'(sum(rate(pleo_gateway_upstream_5xx_total{{{I}}}[{R}])) + sum(rate(pleo_gateway_refused_total{{{I}, reason=~"upstream_unavailable|upstream_timeout"}}[{R}]))) / sum(rate(pleo_gateway_requests_total{{{I}}}[{R}]))', "5xx, unreachable or timed out")], "percentunit",
      desc="What the PleoGatewayUpstreamErrors alert reads (5 % with at least 1 req/s).")
newrow("Latency")
for q in ("0.5", "0.95", "0.99"):
    pass
panel("Added latency (p50, p95, p99)", [
    (f'histogram_quantile({q}, sum by (le) (rate(pleo_gateway_request_duration_seconds_bucket{{{T}}}[{R}]))) - histogram_quantile({q}, sum by (le) (rate(pleo_gateway_upstream_duration_seconds_bucket{{{T}}}[{R}])))', f"p{int(float(q)*100)}")
    for q in ("0.5", "0.95", "0.99")] + [
    (f'(sum(rate(pleo_gateway_request_duration_seconds_sum{{{T}}}[{R}])) - sum(rate(pleo_gateway_upstream_duration_seconds_sum{{{T}}}[{R}]))) / sum(rate(pleo_gateway_request_duration_seconds_count{{{T}}}[{R}]))', "mean")], "s",
      desc="The gateway's own time: each quantile of the whole request (arrival to response head) less the same quantile of Pleo's time, and the mean difference.")
panel("Upstream latency (p50, p95, p99)", [
    (f'histogram_quantile({q}, sum by (le) (rate(pleo_gateway_upstream_duration_seconds_bucket{{{T}}}[{R}])))', f"p{int(float(q)*100)}") for q in ("0.5", "0.95", "0.99")], "s",
      desc="Time Pleo took to answer with headers, summed over the attempts of one request.")
newrow("OAuth")
panel("Token expiry per OAuth tenant", [(f'min by (tenant) (pleo_gateway_token_expiry_seconds{{{I}, tenant=~"$tenant"}})', "{{tenant}}")], "s",
      desc="Seconds until each OAuth tenant's access token expires (refreshed before; 0: none). A line that reaches 0 while its refresh fails alerts.")
panel("Refreshes, failures and suppressed forced refreshes", [
    (f'sum by (result) (rate(pleo_gateway_token_refresh_total{{{I}}}[{R}]))', "refresh {{result}}"),
    (f'sum by (reason) (rate(pleo_gateway_forced_refresh_suppressed_total{{{I}}}[{R}]))', "401 without refresh: {{reason}}"),
    (f'sum(pleo_gateway_token_refresh_failing{{{I}, tenant=~"$tenant"}})', "tenants with failing refreshes")], "short")
newrow("Tenants")
panel("Tenants by state", [(f'sum by (auth_model, state) (pleo_gateway_tenant_states{{{I}, auth_model=~"$auth_model"}}) > 0', "{{auth_model}} {{state}}")], "short",
      desc="Each tenant's credential state as /tenants shows it.")
panel("Installations by status", [
    (f'sum by (status) (pleo_gateway_installations{{{I}}}) > 0', "API-key tenants: {{status}}"),
    (f'sum by (app, status) (pleo_gateway_installed_tenants{{{I}}}) > 0', "installed via {{app}}: {{status}}")], "short",
      desc="What Pleo reports about each API-key tenant's installation, and the tenants installs from Pleo made.")
newrow("Store, connect links and installs")
panel("Store up and operation latency (p95)", [
    (f'min(pleo_gateway_store_up{{{I}}})', "store up"),
    (f'histogram_quantile(0.95, sum by (le, op) (rate(pleo_gateway_store_operation_duration_seconds_bucket{{{I}}}[{R}])))', "p95 {{op}}")], "short",
      desc="The shared token store (store.kind: postgres). The file store is always up and reports no latency.")
panel("Connect-link and install results", [
    (f'sum by (model, result) (rate(pleo_gateway_onboardings_total{{{I}}}[{R}]))', "connect {{model}} {{result}}"),
    (f'sum by (app, result) (rate(pleo_gateway_installs_total{{{I}}}[{R}]))', "install {{app}} {{result}}"),
    (f'sum by (app, reason) (rate(pleo_gateway_handover_refused_total{{{I}}}[{R}]))', "handover refused {{app}} {{reason}}")], "reqps")
newrow("Migration")
panel("Legacy tokens refused per app", [(f'sum by (app) (rate(pleo_gateway_legacy_token_refused_total{{{I}}}[{R}])) > 0', "{{app}}")], "reqps",
      desc="Apps still sending openapi.pleo.io tokens (legacy_tokens names them). GET /migration on the admin listener has the details.")
panel("Pleo's 404/405 per path template", [(f'topk(10, sum by (template) (rate(pleo_gateway_upstream_not_found_total{{{I}}}[{R}]))) > 0', "{{template}}")], "reqps",
      desc="Paths with no External API twin, ids folded to {id}. GET /migration has them per client and tenant.")
newrow("Capacity and edge")
panel("In flight against the limit", [
    (f'sum(pleo_gateway_in_flight_requests{{{I}}})', "in flight"),
    (f'sum(pleo_gateway_in_flight_limit{{{I}}})', "limits.max_in_flight"),
    (f'sum(rate(pleo_gateway_refused_total{{{I}, reason="overloaded"}}[{R}]))', "shed (503 overloaded) /s")], "short")
panel("Open connections", [(f'sum by (listener) (pleo_gateway_open_connections{{{I}}})', "{{listener}}")], "short")
panel("Certificate expiry", [(f'min by (certificate) (pleo_gateway_certificate_expiry_timestamp_seconds{{{I}}}) - time()', "{{certificate}}")], "s",
      desc="Time left on each served certificate: warning under 14 days, critical under 7.")
panel("Trace export", [
    (f'sum(rate(pleo_gateway_spans_exported_total{{{I}}}[{R}]))', "exported /s"),
    (f'sum by (reason) (rate(pleo_gateway_spans_dropped_total{{{I}}}[{R}]))', "dropped /s: {{reason}}")], "short",
      desc="Spans sent to the OTLP collector (telemetry.otlp_endpoint) and spans dropped. Zero when traces are off.")
panel("Config reloads", [
    (f'sum by (result) (increase(pleo_gateway_config_reloads_total{{{I}}}[$__range]))', "{{result}}"),
    (f'min(pleo_gateway_config_last_reload_successful{{{I}}})', "last reload successful")], "short")

def var(name, label, metric, all_=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": f"label_values({metric}, {name})", "refId": "v"},
            "definition": f"label_values({metric}, {name})", "refresh": 2, "includeAll": all_, "multi": True,
            "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}
dash = {
    "title": "pleo-gateway",
    "uid": "pleo-gateway",
    "description": "pleo-gateway in front of Pleo's External API: traffic, latency, OAuth tokens, tenants, store, migration, capacity. Metrics: docs/metrics.md; alerts: deploy/monitoring/prometheus-rules.yaml.",
    "tags": ["pleo-gateway"],
    "editable": True,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "timezone": "utc",
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}],
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": {}},
        var("instance", "Instance", "pleo_gateway_in_flight_requests"),
        var("environment", "Environment", "pleo_gateway_tenants"),
        var("auth_model", "Auth model", "pleo_gateway_tenants"),
        var("tenant", "Tenant", "pleo_gateway_token_expiry_seconds"),
    ]},
    "panels": panels,
}
open(os.path.join(HERE, "grafana-dashboard.json"), "w").write(json.dumps(dash, indent=2) + "\n")
print(len([p for p in panels if p["type"] != "row"]), "panels")
