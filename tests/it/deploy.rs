//! The example Kubernetes manifests stay true: the ConfigMap's gateway.yaml
//! passes `pleo-gateway check` with the Secret's files and env in place (and
//! its PostgreSQL store reachable), and the Deployment's probes, ports,
//! mounts, args and rollout match that config.

use crate::support;

use std::process::Command;

fn manifest(name: &str) -> Vec<yaml_serde::Value> {
    let text = std::fs::read_to_string(format!("{}/deploy/kubernetes/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    yaml_serde::Deserializer::from_str(&text).map(|d| yaml_serde::Value::deserialize(d).unwrap()).collect()
}

use serde::Deserialize;

#[test]
fn the_configmap_config_checks_out_and_the_deployment_matches_it() {
    let config = manifest("configmap.yaml")[0]["data"]["gateway.yaml"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    // The pod's mounts, recreated under a temporary directory.
    for sub in ["secrets", "tls"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("secrets/acme-client-secret"), "acme-client-secret-k8s-1234").unwrap();
    std::fs::write(dir.path().join("secrets/acme-refresh-token"), "acme-refresh-token-k8s-5678").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["pleo-gateway.pleo-gateway.svc".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("tls/tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls/tls.key"), key.serialize_pem()).unwrap();
    let local = config
        .replace("/etc/pleo-gateway/secrets/", &format!("{root}/secrets/"))
        .replace("/etc/pleo-gateway/tls/", &format!("{root}/tls/"))
        .replace("/etc/pleo-gateway/tls/", &format!("{root}/tls/"));
    // `check` reaches the store: a throwaway PostgreSQL stands in for the
    // cluster's (without the package, the file store, so the rest is checked).
    let pg = support::postgres::Postgres::start("the_configmap_config_checks_out");
    let local = match &pg {
        Some(_) => local,
        None => local.replace("kind: postgres\n  url: { env: PLEO_GATEWAY_DATABASE_URL }", "kind: file"),
    };
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pleo-gateway"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env("GLOBEX_API_KEY", "ik_globex_k8s_9abc")
        .env("PLEO_GATEWAY_DATABASE_URL", pg.as_ref().map(|p| p.url()).unwrap_or_default())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("acme") && stdout.contains("globex"), "{stdout}");
    for secret in ["acme-client-secret-k8s-1234", "acme-refresh-token-k8s-5678", "ik_globex_k8s_9abc"] {
        assert!(!stdout.contains(secret));
    }
    if pg.is_some() {
        assert!(stdout.contains("store: postgres, reachable"), "{stdout}");
        assert!(!stdout.contains(support::postgres::DB_PASSWORD));
    }

    let deployment = &manifest("deployment.yaml")[0];
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9464");
    assert!(config.contains("admin_listen: 0.0.0.0:9464") && config.contains("listen: 0.0.0.0:8443"));
    let ports: Vec<i64> =
        container["ports"].as_sequence().unwrap().iter().map(|p| p["containerPort"].as_i64().unwrap()).collect();
    assert_eq!(ports, [8443, 9464]);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["args"][1], "/etc/pleo-gateway/config/gateway.yaml");
    let mounts: Vec<&str> =
        container["volumeMounts"].as_sequence().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    for dir in ["/etc/pleo-gateway/config", "/etc/pleo-gateway/secrets", "/etc/pleo-gateway/tls"] {
        assert!(mounts.contains(&dir), "{dir} not mounted");
    }
    // Replicas on the shared store: a rollout never removes the last ready
    // one, drains see the pod leave the endpoints first, and the database
    // URL comes from a Secret.
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert!(container["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64().unwrap() > 0);
    let env = container["env"].as_sequence().unwrap();
    let db = env.iter().find(|e| e["name"] == "PLEO_GATEWAY_DATABASE_URL").expect("the database URL");
    assert_eq!(db["valueFrom"]["secretKeyRef"]["name"], "pleo-gateway-database");
    assert!(config.contains("url: { env: PLEO_GATEWAY_DATABASE_URL }"));
    let pdb = &manifest("pdb.yaml")[0];
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert!(pdb["spec"]["minAvailable"].as_i64().unwrap() >= 2);
    let kustomization =
        std::fs::read_to_string(format!("{}/deploy/kubernetes/kustomization.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    assert!(kustomization.contains("pdb.yaml"));
    // preStop and the drain fit in the grace period.
    assert!(config.contains("drain_timeout: 30s"));
    assert!(pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap() > 35);
}
