//! `pleo-gateway hash-key`: a new client key or admin token (printed once)
//! with the entry the config stores, or the SHA-256 of one read from stdin.

use std::process::ExitCode;

use super::EX_USAGE;

pub fn hash_key(stdin: bool, name: &str, tenants: &[String], admin: bool) -> ExitCode {
    use crate::clients::{generate_key, key_sha256};
    if stdin {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("cannot read standard input: {e}");
            return ExitCode::from(EX_USAGE);
        }
        let key = line.trim_end_matches(['\r', '\n']);
        if key.is_empty() {
            eprintln!("no key on standard input (expected the key or token on one line)");
            return ExitCode::from(EX_USAGE);
        }
        // The digest only: the key was typed by the operator and stays with them.
        println!("{}", key_sha256(key.as_bytes()));
        return ExitCode::SUCCESS;
    }
    let key = generate_key();
    let digest = key_sha256(key.expose_secret().as_bytes());
    println!("key: {}", key.expose_secret());
    if admin {
        println!(
            "  Shown once: send it as Authorization: Bearer <key> to the admin listener, and keep it as a secret."
        );
        println!("  The gateway stores only the digest below.");
        println!();
        println!("admin:");
        println!("  tokens:");
        println!("    - {{ name: {name}, sha256: \"{digest}\" }}");
        return ExitCode::SUCCESS;
    }
    println!("  Shown once: give it to the app (it sends Authorization: Bearer <key>) and keep it as a secret.");
    println!("  The gateway stores only the digest below.");
    println!();
    println!("clients:");
    println!("  - name: {name}");
    println!("    key_sha256: \"{digest}\"");
    println!("    tenants: [{}]", tenants.join(", "));
    ExitCode::SUCCESS
}
