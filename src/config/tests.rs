//! Config errors as a table: each snippet and the text its error must contain
//! (file, line, key, what is expected).

use std::path::Path;

use super::*;

const TENANT: &str = "tenants:\n  t1:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: inline-key-value-1234\n";

fn err(yaml: &str) -> String {
    Config::from_yaml(yaml, Path::new("/etc/gw/gateway.yaml")).unwrap_err().to_string()
}

#[test]
fn errors_name_file_line_key_and_expectation() {
    let cases: &[(&str, &[&str])] = &[
        ("listen: 127.0.0.1:8080\nbogus: 1\n", &["/etc/gw/gateway.yaml:2:1", "unknown field `bogus`", "expected one of"]),
        ("tenants:\n  t1:\n    auth:\n      model: integrated_api_key\n      key: k\n", &["gateway.yaml:3:", "tenants.t1", "missing field `environment`"]),
        ("tenants:\n  t1:\n    environment: staging\n    auth:\n      model: magic\n", &[":5:", "tenants.t1.auth.model", "unknown variant `magic`", "oauth2"]),
        ("tenants:\n  t1:\n    environment: prod\n    auth:\n      model: oauth2\n", &[":3:", "unknown variant `prod`", "staging"]),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: { env: PGW_TEST_SURELY_UNSET }\n",
            &["gateway.yaml:6:7", "tenants.t1.auth.key", "PGW_TEST_SURELY_UNSET is not set"],
        ),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth:\n      model: standalone_api_key\n",
            &["gateway.yaml:4:5", "tenants.t1.auth", "missing `key`"],
        ),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: abcdefgh12345\n      access_token: x\n",
            &["gateway.yaml:7:7", "tenants.t1.auth.access_token", "not used by model integrated_api_key"],
        ),
        ("environments:\n  production:\n    base_url: https://openapi.pleo.io\n", &["gateway.yaml:3:5", "environments.production.base_url", "legacy API", "external.pleo.io"]),
        ("environments:\n  staging:\n    base_url: http://example.com\n", &[":3:5", "plain http to a non-loopback host"]),
        ("environments:\n  staging:\n    ca_file: /nonexistent/ca.pem\n", &[":3:5", "environments.staging.ca_file", "PEM"]),
        ("default_tenant: nobody\n", &[":1:1", "default_tenant", "names no tenant"]),
        ("listen: 0.0.0.0:8080\n", &[":1:1", "listen", "open relay", "allow_unauthenticated_clients"]),
        ("listen: localhost\n", &[":1:1", "not an address", "IP:PORT"]),
        ("tenant_from:\n  - header: X-Pleo-Tenant\n  - cookie: t\n", &[":3:", "tenant_from[1]", "unknown tenant rule `cookie`"]),
        ("tenant_from:\n  - path_prefix: tenants\n", &[":2:5", "tenant_from[0]", "leading and trailing slash"]),
        ("tenant_from:\n  - client_key\n", &[":2:5", "client_key needs `clients`"]),
        ("clients:\n  - name: erp\n    key_sha256: abc\n    tenants: [t1]\n", &[":3:5", "clients[0].key_sha256", "64 hex"]),
        ("limits:\n  upstream_timeout: soon\n", &[":2:3", "limits.upstream_timeout", "not a duration"]),
        ("limits:\n  token_timeout: 0s\n", &[":2:3", "limits.token_timeout", "not a duration"]),
        ("store: { kind: redis }\n", &[":1:", "store.kind", "expected file or postgres"]),
        ("store: { kind: postgres }\n", &[":1:", "store", "missing `url`"]),
        ("state_dir: ./s\nstore: { kind: file, dir: ./t }\n", &[":1:1", "state_dir", "keep only `store`"]),
        ("store: { kind: file, pool_size: 3 }\n", &[":1:", "store.pool_size", "not used by store kind file"]),
        (
            "store: { kind: postgres, url: \"postgres://u:hunter2pw@db:notaport/x\" }\n",
            &[":1:", "store.url", "not a PostgreSQL connection URL"],
        ),
        (
            "store: { kind: postgres, url: { env: PGW_TEST_UNSET_DB }, pool_size: 0, poll_interval: never }\n",
            &["store.url", "PGW_TEST_UNSET_DB is not set", "store.pool_size", "1 to 64", "store.poll_interval"],
        ),
        ("limits: { drain_timeout: never }\n", &[":1:11", "limits.drain_timeout", "not a duration"]),
        ("tenants:\n  Bad.Name:\n    environment: staging\n    auth: { model: integrated_api_key, key: k }\n", &[":2:3", "not a valid tenant name"]),
        ("tls: { cert: a, key: b }\n", &[":1:1", "tls", "cannot read TLS certificates from", "/etc/gw/a"]),
        ("client_ca: ca.pem\n", &[":1:1", "client_ca", "needs `tls`"]),
        ("sandbox:\n  access_token_ttl: 10ms\n", &[":2:", "sandbox.access_token_ttl", "at least 1s"]),
        ("access_log: { format: xml }\n", &[":1:", "access_log.format", "json, text or off"]),
        ("legacy_tokens:\n  - { name: erp, sha256: nothex }\n", &[":2:", "legacy_tokens[0]", "64 hex"]),
        ("limits:\n  max_header_bytes: 100\n", &[":2:3", "limits.max_header_bytes", "8192 to 1048576"]),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth:\n      model: oauth2\n      refresh_token: { env: PGW_TEST_UNSET_RT }\n",
            &["tenants.t1.auth.refresh_token", "PGW_TEST_UNSET_RT is not set", "missing `client_id`"],
        ),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: { envv: X }\n",
            &[":6:", "tenants.t1.auth.key", "unknown secret source `envv`", "{ env: NAME }, { file: PATH }"],
        ),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth:\n      model: integrated_api_key\n      key: [sk_in_a_list]\n",
            &[":6:", "tenants.t1.auth.key", "expected a secret"],
        ),
        // Migration (docs/migration.md).
        ("rewrites:\n  - { from: \"/v1/a/{id}\", to: \"/v2/a/{idd}\" }\n", &[":2:", "rewrites[0].to", "unknown capture `{idd}`"]),
        (
            "rewrites:\n  - { from: \"/v1/a/{id}\", to: \"/v2/a/{id}\" }\n  - { method: GET, from: \"/v1/{x}/{y}\", to: \"/v2/b\" }\n",
            &[":3:", "rewrites[1].from", "overlaps rewrites[0]", "/v1/a/{id} -> /v2/a/{id}"],
        ),
        ("rewrites:\n  - { method: FETCH, from: /v1/a, to: /v2/a }\n", &[":2:", "rewrites[0].method", "not a method"]),
        ("rewrites:\n  - { from: /v1/a, to: \"//evil.example/a\" }\n", &[":2:", "rewrites[0].to", "not a path template"]),
        ("rewrites:\n  - { from: \"/v1/{id}/{id}\", to: /v2/a }\n", &[":2:", "rewrites[0].from", "captures `{id}` twice"]),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth: { model: integrated_api_key, key: abcdefgh12345 }\n    rewrites:\n      - { from: \"/v1/x\", to: \"/v2/{x}\" }\n",
            &[":6:", "tenants.t1.rewrites[0].to", "unknown capture"],
        ),
        ("policy: strict\n", &[":1:1", "policy", "expected partner"]),
        ("migration: { max_templates: 0 }\n", &[":1:", "migration.max_templates", "1 to 10000"]),
        // Connect links (docs/connect.md).
        ("connect: { listen: 127.0.0.1:8443, public_url: http://127.0.0.1:8443 }\n", &[":1:1", "store", "missing `encryption_key`", "openssl rand"]),
        (
            "store: { kind: file, encryption_key: hunter2pw-too-short }\n",
            &[":1:", "store.encryption_key", "not a 256-bit key", "base64"],
        ),
        (
            "store: { kind: file, previous_encryption_keys: [abc] }\n",
            &[":1:", "store.previous_encryption_keys", "needs `encryption_key`"],
        ),
        (
            "store: { kind: file, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }\nconnect: { listen: 127.0.0.1:8443, public_url: https://c.example.com/pleo }\n",
            &[":2:", "connect.public_url", "with no path"],
        ),
        (
            "store: { kind: file, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }\nconnect: { listen: 127.0.0.1:8443, public_url: http://connect.example.com }\n",
            &[":2:", "connect.public_url", "http only on a loopback host"],
        ),
        (
            "listen: 127.0.0.1:8443\nstore: { kind: file, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }\nconnect: { listen: 127.0.0.1:8443, public_url: https://c.example.com }\n",
            &[":3:", "connect.listen", "same address as `listen`"],
        ),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth: { model: integrated_api_key, source: connection }\n",
            &["store", "missing `encryption_key`"],
        ),
        (
            "tenants:\n  t1:\n    environment: staging\n    auth: { model: integrated_api_key, source: link }\n",
            &[":4:", "tenants.t1.auth.source", "expected config or connection"],
        ),
        (
            "store: { kind: file, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }\ntenants:\n  t1:\n    environment: staging\n    auth: { model: oauth2, source: connection, client_id: c, client_secret: s, refresh_token: r }\n",
            &[":5:", "tenants.t1.auth.refresh_token", "cannot be combined with `source: connection`"],
        ),
        (
            "store: { kind: file, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }\ntenants:\n  t1:\n    environment: staging\n    auth: { model: standalone_api_key, source: connection, key: abcdefgh12345 }\n",
            &[":5:", "tenants.t1.auth.key", "cannot be combined with `source: connection`"],
        ),
    ];
    for (yaml, wanted) in cases {
        let e = err(yaml);
        assert!(!e.contains("hunter2pw"), "a store URL's password (or a store key) in an error:\n{e}");
        for w in *wanted {
            assert!(e.contains(w), "error for\n{yaml}\nwas\n{e}\nexpected to contain {w:?}");
        }
    }
}

#[test]
fn several_problems_are_all_reported() {
    let e = err("default_tenant: nobody\nlimits:\n  drain_timeout: never\n");
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn a_good_config_loads_with_defaults_and_warns_about_inline_secrets() {
    let c = Config::from_yaml(TENANT, Path::new("/etc/gw/gateway.yaml")).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9464");
    assert_eq!(c.environments[&Environment::Production].base_url.to_string(), "https://external.pleo.io");
    assert_eq!(c.environments[&Environment::Staging].token_url.to_string(), "https://auth.staging.pleo.io/oauth/token");
    assert_eq!(c.tenant_from.len(), 2);
    assert_eq!(c.state_dir, Path::new("/etc/gw/./state"));
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("tenants.t1.auth.key") && !c.warnings[0].contains("inline-key-value"));
    assert!(!format!("{c:?}").contains("inline-key-value-1234"), "Debug of the config hides secrets");
    let report = check_report(&c);
    assert!(report.contains("••••1234") && !report.contains("inline-key-value"));
}

#[test]
fn off_loopback_is_allowed_with_clients_or_explicit_opt_in() {
    let open = format!("listen: 0.0.0.0:8080\nallow_unauthenticated_clients: true\n{TENANT}");
    assert!(Config::from_yaml(&open, Path::new("g.yaml")).is_ok());
    let with_clients = format!(
        "listen: 0.0.0.0:8080\nclients:\n  - name: erp\n    key_sha256: \"{}\"\n    tenants: [t1]\n{TENANT}",
        "ab".repeat(32)
    );
    assert!(Config::from_yaml(&with_clients, Path::new("g.yaml")).is_ok());
}

/// DESIGN.md's sample gateway.yaml (secrets as files, edge keys included, no
/// TLS) loads: a config written for the contract runs, with warnings for what
/// this version does not act on yet.
#[test]
fn the_contract_sample_config_loads_with_warnings() {
    let dir = std::env::temp_dir().join(format!("pgw-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["acme-client-secret", "acme-refresh-token", "globex-key", "initech-key"] {
        std::fs::write(dir.join(f), format!("{f}-value-0123456789\n")).unwrap();
    }
    let yaml = r#"
listen: 127.0.0.1:8080
admin_listen: 127.0.0.1:9464
workers: 2
tenant_from:
  - header: X-Pleo-Tenant
  - path_prefix: /tenants/
default_tenant: acme
state_dir: ./state
tenants:
  acme:
    environment: production
    auth:
      model: oauth2
      client_id: my-client-id
      client_secret: { file: acme-client-secret }
      refresh_token: { file: acme-refresh-token }
  globex:
    environment: staging
    auth:
      model: integrated_api_key
      key: { file: globex-key }
  initech:
    environment: staging
    auth:
      model: standalone_api_key
      key: { file: initech-key }
clients:
  - name: legacy-erp
    key_sha256: "0000000000000000000000000000000000000000000000000000000000000000"
    tenants: [acme]
allow_unauthenticated_clients: false
legacy_tokens:
  - { name: old-erp, sha256: "1111111111111111111111111111111111111111111111111111111111111111" }
limits:
  header_read_timeout: 10s
  idle_timeout: 60s
  max_request_body_bytes: 10485760
  max_header_bytes: 65536
  upstream_connect_timeout: 5s
  upstream_timeout: 60s
  max_in_flight: 10000
  drain_timeout: 30s
access_log: { format: json }
metrics: { per_tenant: false }
"#;
    let c = Config::from_yaml(yaml, &dir.join("gateway.yaml")).unwrap_or_else(|e| panic!("{e}"));
    match &c.tenants["acme"].auth {
        AuthConfig::OAuth2Managed { client_id, client_secret, refresh_token: Some(rt) } => {
            assert_eq!(client_id, "my-client-id");
            assert_eq!(client_secret.expose_secret(), "acme-client-secret-value-0123456789");
            assert_eq!(rt.expose_secret(), "acme-refresh-token-value-0123456789");
        }
        other => panic!("expected managed oauth2, got {other:?}"),
    }
    assert_eq!(c.limits.max_header_bytes, 65536);
    assert_eq!(c.limits.max_in_flight, 10000);
    assert_eq!(c.limits.max_request_body_bytes, 10485760);
    assert_eq!(c.limits.idle_timeout, std::time::Duration::from_secs(60));
    let warnings = c.warnings.join("\n");
    assert_eq!(c.legacy_tokens[0].name, "old-erp");
    assert_eq!(c.access_log.format, crate::config::model::Format::Json);
    assert!(!warnings.contains("-value-0123456789"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_postgres_store_loads_with_defaults_and_its_url_never_prints() {
    let yaml =
        "store:\n  kind: postgres\n  url: \"postgres://gw:s3cr3t-db-pw@db.internal:5432/gateway?sslmode=require\"\n";
    let c = Config::from_yaml(yaml, Path::new("/etc/gw/gateway.yaml")).unwrap();
    let StoreConfig::Postgres(pg) = &c.store else { panic!("expected the postgres store") };
    assert_eq!((pg.pool_size, pg.statement_timeout), (4, std::time::Duration::from_secs(5)));
    assert_eq!(pg.poll_interval, std::time::Duration::from_secs(10));
    assert!(!format!("{c:?}").contains("s3cr3t-db-pw"), "Debug shows the database password");
    assert!(!check_report(&c).contains("s3cr3t-db-pw"));
}

#[test]
fn telemetry_takes_otlp_http_endpoints_and_refuses_the_rest_without_echoing_them() {
    let ok = Config::from_yaml(
        &format!("{TENANT}telemetry:\n  otlp_endpoint: http://127.0.0.1:4318/\n  service_name: edge-gw\n  propagate_upstream: true\n"),
        Path::new("/etc/gw/gateway.yaml"),
    )
    .unwrap();
    assert_eq!(ok.telemetry.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    assert_eq!(ok.telemetry.service_name, "edge-gw");
    assert!(ok.telemetry.propagate_upstream);
    let off = Config::from_yaml(TENANT, Path::new("/etc/gw/gateway.yaml")).unwrap();
    assert_eq!(off.telemetry, model::TelemetryConfig::default(), "absent: nothing exported, nothing propagated");
    let cases: &[(&str, &[&str])] = &[
        ("telemetry:\n  otlp_endpoint: grpc://collector:4317\n", &[":8:3", "telemetry.otlp_endpoint", "gRPC", "4318"]),
        ("telemetry:\n  otlp_endpoint: collector:4318\n", &["telemetry.otlp_endpoint", "http://"]),
        (
            "telemetry:\n  otlp_endpoint: https://user:pw-secret-9@collector\n",
            &["telemetry.otlp_endpoint", "user info"],
        ),
        ("telemetry:\n  service_name: my gateway\n", &["telemetry.service_name", "printable"]),
        ("telemetry:\n  otlp_endpont: http://x\n", &["unknown field `otlp_endpont`"]),
    ];
    for (yaml, wants) in cases {
        let e = err(&format!("{TENANT}{yaml}"));
        for w in *wants {
            assert!(e.contains(w), "{yaml}: {e}");
        }
        assert!(!e.contains("pw-secret-9"), "the endpoint is not echoed: {e}");
    }
}
