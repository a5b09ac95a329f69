//! The example Kubernetes manifests stay true: the ConfigMap's gateway.yaml
//! passes `pleo-gateway check` with the Secret's files and env in place, and
//! the Deployment's probes, ports, mounts and args match that config.

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
    for sub in ["secrets", "tls", "state"] {
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
        .replace("/var/lib/pleo-gateway", &format!("{root}/state"));
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pleo-gateway"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env("GLOBEX_API_KEY", "ik_globex_k8s_9abc")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("acme") && stdout.contains("globex"), "{stdout}");
    for secret in ["acme-client-secret-k8s-1234", "acme-refresh-token-k8s-5678", "ik_globex_k8s_9abc"] {
        assert!(!stdout.contains(secret));
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
    for dir in
        ["/etc/pleo-gateway/config", "/etc/pleo-gateway/secrets", "/etc/pleo-gateway/tls", "/var/lib/pleo-gateway"]
    {
        assert!(mounts.contains(&dir), "{dir} not mounted");
    }
    // The drain fits in the grace period.
    assert!(config.contains("drain_timeout: 30s"));
    assert!(pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap() > 30);
}
