"""Writes prometheus-rules.test.yaml: synthetic series for each alert, and the
alerts promtool must see firing and resolved, with their annotations
rendered from prometheus-rules.yaml (so a changed description needs a run).
Needs PyYAML (python3-yaml).  python3 deploy/monitoring/gen/rules_tests.py"""
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
import yaml, json, re
rules = yaml.safe_load(open(os.path.join(HERE, 'prometheus-rules.yaml')))
by = {}
for g in rules['groups']:
    for r in g['rules']:
        by.setdefault(r['alert'], []).append(r)

def render(t, labels, value):
    def sub(m):
        e = m.group(1).strip()
        if e.startswith('$labels.'):
            return labels[e[len('$labels.'):]]
        assert e.startswith('$value'), e
        return value
    return re.sub(r'\{\{(.*?)\}\}', sub, t)

def alert(name, labels, value, severity=None):
    rs = by[name]
    r = [x for x in rs if severity is None or x['labels']['severity'] == severity][0]
    l = dict(labels); l['severity'] = r['labels']['severity']
    return {'exp_labels': l, 'exp_annotations': {k: render(v, labels, value) for k, v in r['annotations'].items()}}

J = {'job': 'pleo-gateway'}
I = {'job': 'pleo-gateway', 'instance': 'gw-1:9464'}
def s(name, labels, values):
    inner = ','.join(f'{k}="{v}"' for k, v in labels.items())
    return {'series': f'{name}{{{inner}}}', 'values': values}

tests = []
# 1. OAuth token expiring while refresh fails; a token near expiry that refreshes fine does not alert.
acme = dict(I, tenant='acme'); globex = dict(I, tenant='globex')
tests.append({'name': 'OAuth token expiring while its refresh fails', 'interval': '1m', 'input_series': [
    s('pleo_gateway_token_expiry_seconds', acme, '900 600 240 180 120 60 0 0 0 900 900'),
    s('pleo_gateway_token_refresh_failing', acme, '0 0 1 1 1 1 1 1 1 0 0'),
    s('pleo_gateway_token_expiry_seconds', globex, '100x10'),
    s('pleo_gateway_token_refresh_failing', globex, '0x10'),
], 'alert_rule_test': [
    {'eval_time': '2m', 'alertname': 'PleoGatewayOAuthTokenExpiringWhileRefreshFails', 'exp_alerts': []},
    {'eval_time': '4m', 'alertname': 'PleoGatewayOAuthTokenExpiringWhileRefreshFails', 'exp_alerts': [alert('PleoGatewayOAuthTokenExpiringWhileRefreshFails', acme, '2m 0s')]},
    {'eval_time': '10m', 'alertname': 'PleoGatewayOAuthTokenExpiringWhileRefreshFails', 'exp_alerts': []},
]})
# 2-3. Tenant states.
oauth = dict(J, auth_model='oauth2'); ik = dict(J, auth_model='integrated_api_key')
tests.append({'name': 'tenants needing a new consent, and rejected API keys', 'interval': '1m', 'input_series': [
    s('pleo_gateway_tenant_states', dict(I, auth_model='oauth2', state='reauthorization_required'), '0 0 1x7 0 0'),
    s('pleo_gateway_tenant_states', dict(I, auth_model='oauth2', state='connected'), '3x11'),
    s('pleo_gateway_tenant_states', dict(I, auth_model='integrated_api_key', state='rejected'), '0 0 2x7 0 0'),
    s('pleo_gateway_tenant_states', dict(I, auth_model='integrated_api_key', state='connected'), '5x11'),
], 'alert_rule_test': [
    {'eval_time': '4m', 'alertname': 'PleoGatewayTenantNeedsReauthorization', 'exp_alerts': []},
    {'eval_time': '7m', 'alertname': 'PleoGatewayTenantNeedsReauthorization', 'exp_alerts': [alert('PleoGatewayTenantNeedsReauthorization', oauth, '1')]},
    {'eval_time': '11m', 'alertname': 'PleoGatewayTenantNeedsReauthorization', 'exp_alerts': []},
    {'eval_time': '4m', 'alertname': 'PleoGatewayApiKeyRejected', 'exp_alerts': []},
    {'eval_time': '7m', 'alertname': 'PleoGatewayApiKeyRejected', 'exp_alerts': [alert('PleoGatewayApiKeyRejected', ik, '2')]},
    {'eval_time': '11m', 'alertname': 'PleoGatewayApiKeyRejected', 'exp_alerts': []},
]})
# 4. Installations INACTIVE or ERROR (configured keys and installs).
tests.append({'name': 'installations inactive or in error', 'interval': '1m', 'input_series': [
    s('pleo_gateway_installations', dict(I, status='error'), '0 1x8 0 0'),
    s('pleo_gateway_installations', dict(I, status='activated'), '4x11'),
    s('pleo_gateway_installed_tenants', dict(I, app='ledger', resource='company', status='inactive'), '0 1x8 0 0'),
], 'alert_rule_test': [
    {'eval_time': '3m', 'alertname': 'PleoGatewayInstallationInactiveOrError', 'exp_alerts': []},
    {'eval_time': '7m', 'alertname': 'PleoGatewayInstallationInactiveOrError', 'exp_alerts': [
        alert('PleoGatewayInstallationInactiveOrError', dict(J, status='error'), '1'),
        alert('PleoGatewayInstallationInactiveOrError', dict(J, status='inactive'), '1')]},
    {'eval_time': '11m', 'alertname': 'PleoGatewayInstallationInactiveOrError', 'exp_alerts': []},
]})
# 5-6. Store and reloads.
tests.append({'name': 'store down, failed reload', 'interval': '1m', 'input_series': [
    s('pleo_gateway_store_up', I, '1 0 0 0 1 1'),
    s('pleo_gateway_config_last_reload_successful', I, '1 0 1 1'),
], 'alert_rule_test': [
    {'eval_time': '1m', 'alertname': 'PleoGatewayStoreDown', 'exp_alerts': []},
    {'eval_time': '2m', 'alertname': 'PleoGatewayStoreDown', 'exp_alerts': [alert('PleoGatewayStoreDown', I, '0')]},
    {'eval_time': '4m', 'alertname': 'PleoGatewayStoreDown', 'exp_alerts': []},
    {'eval_time': '0m', 'alertname': 'PleoGatewayConfigReloadFailed', 'exp_alerts': []},
    {'eval_time': '1m', 'alertname': 'PleoGatewayConfigReloadFailed', 'exp_alerts': [alert('PleoGatewayConfigReloadFailed', I, '0')]},
    {'eval_time': '2m', 'alertname': 'PleoGatewayConfigReloadFailed', 'exp_alerts': []},
]})
# 7. Certificates: time() is 0 at the start, the cert expires 10 days in, is renewed on day 4.
listen = dict(I, certificate='listen')
tests.append({'name': 'a certificate close to expiry, then renewed', 'interval': '2m', 'input_series': [
    s('pleo_gateway_certificate_expiry_timestamp_seconds', listen, '864000x2880 8640000x100'),
], 'alert_rule_test': [
    {'eval_time': '5m', 'alertname': 'PleoGatewayCertificateExpiring', 'exp_alerts': []},
    {'eval_time': '1h', 'alertname': 'PleoGatewayCertificateExpiring', 'exp_alerts': [alert('PleoGatewayCertificateExpiring', listen, '9d 23h 0m 0s', 'warning')]},
    {'eval_time': '73h', 'alertname': 'PleoGatewayCertificateExpiring', 'exp_alerts': [
        alert('PleoGatewayCertificateExpiring', listen, '6d 23h 0m 0s', 'warning'),
        alert('PleoGatewayCertificateExpiring', listen, '6d 23h 0m 0s', 'critical')]},
    {'eval_time': '97h', 'alertname': 'PleoGatewayCertificateExpiring', 'exp_alerts': []},
]})
# 8. Upstream errors: 10 % at 2 req/s fires; 100 % at 0.5 req/s does not.
ok = dict(I, auth_model='oauth2', environment='production', status='200')
five = dict(I, auth_model='oauth2', environment='production')
quiet = {'job': 'quiet', 'instance': 'gw-q:9464', 'auth_model': 'oauth2', 'environment': 'staging'}
tests.append({'name': 'Pleo failing for 10 % of 2 req/s, and for all of a trickle', 'interval': '1m', 'input_series': [
    s('pleo_gateway_requests_total', ok, '0+120x45'),
    s('pleo_gateway_upstream_5xx_total', five, '0x10 12+12x20 252x14'),
    s('pleo_gateway_refused_total', dict(I, reason='upstream_timeout'), '0x45'),
    s('pleo_gateway_requests_total', dict(quiet, status='502'), '0+30x45'),
    s('pleo_gateway_upstream_5xx_total', quiet, '0x45'),
    s('pleo_gateway_refused_total', {'job': 'quiet', 'instance': 'gw-q:9464', 'reason': 'upstream_unavailable'}, '0+30x45'),
], 'alert_rule_test': [
    {'eval_time': '10m', 'alertname': 'PleoGatewayUpstreamErrors', 'exp_alerts': []},
    {'eval_time': '25m', 'alertname': 'PleoGatewayUpstreamErrors', 'exp_alerts': [alert('PleoGatewayUpstreamErrors', J, '10%')]},
    {'eval_time': '40m', 'alertname': 'PleoGatewayUpstreamErrors', 'exp_alerts': []},
]})
# 9. Shedding above the floor.
tests.append({'name': 'shedding 0.2 req/s, then none', 'interval': '1m', 'input_series': [
    s('pleo_gateway_refused_total', dict(I, reason='overloaded'), '0+12x20 240x20'),
    s('pleo_gateway_refused_total', dict(I, reason='tenant_unknown'), '0+60x40'),
], 'alert_rule_test': [
    {'eval_time': '3m', 'alertname': 'PleoGatewayShedding', 'exp_alerts': []},
    {'eval_time': '12m', 'alertname': 'PleoGatewayShedding', 'exp_alerts': [alert('PleoGatewayShedding', J, '0.20')]},
    {'eval_time': '35m', 'alertname': 'PleoGatewayShedding', 'exp_alerts': []},
]})
# 9b. Trace spans dropped: the collector down for a while, then back.
tests.append({'name': 'trace spans dropped while the collector is down', 'interval': '1m', 'input_series': [
    s('pleo_gateway_spans_dropped_total', dict(I, reason='export_failed'), '0x5 0+600x20 12000x40'),
    s('pleo_gateway_spans_dropped_total', dict(I, reason='queue_full'), '0x65'),
], 'alert_rule_test': [
    {'eval_time': '5m', 'alertname': 'PleoGatewayTraceSpansDropped', 'exp_alerts': []},
    {'eval_time': '20m', 'alertname': 'PleoGatewayTraceSpansDropped', 'exp_alerts': [alert('PleoGatewayTraceSpansDropped', dict(J, reason='export_failed'), '')]},
    {'eval_time': '50m', 'alertname': 'PleoGatewayTraceSpansDropped', 'exp_alerts': []},
]})
# 10. Legacy tokens still arriving (info), gone an hour after the last.
tests.append({'name': 'legacy tokens still arriving', 'interval': '1m', 'input_series': [
    s('pleo_gateway_legacy_token_refused_total', dict(I, app='old-erp'), '0 1 2 3x100'),
    s('pleo_gateway_legacy_token_refused_total', dict(I, app='unnamed'), '0x100'),
], 'alert_rule_test': [
    {'eval_time': '5m', 'alertname': 'PleoGatewayLegacyTokensArriving', 'exp_alerts': [alert('PleoGatewayLegacyTokensArriving', dict(J, app='old-erp'), '')]},
    {'eval_time': '90m', 'alertname': 'PleoGatewayLegacyTokensArriving', 'exp_alerts': []},
]})

doc = {'rule_files': ['prometheus-rules.yaml'], 'evaluation_interval': '1m', 'tests': tests}
header = """# Unit tests for prometheus-rules.yaml: every alert fires on synthetic
# series and resolves again.   promtool test rules deploy/monitoring/prometheus-rules.test.yaml
# (tests/it/monitoring.rs runs it, and checks that each alert is tested.)
"""
open(os.path.join(HERE, 'prometheus-rules.test.yaml'), 'w').write(header + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True))
