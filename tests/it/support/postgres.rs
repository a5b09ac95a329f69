//! A throwaway PostgreSQL server from Debian's `postgresql` package: initdb
//! into a temporary directory, `pg_ctl` on a loopback port, password
//! authentication. Run as the `postgres` user when the tests run as root
//! (initdb refuses root). Stopped and removed when dropped.
//!
//! Without the package the tests that need it are skipped with a message,
//! so `cargo test` works on a machine with only the Rust toolchain;
//! `.ci/run` installs the package and sets PLEO_GATEWAY_REQUIRE_POSTGRES=1,
//! which turns a missing server into a failure.

use std::path::PathBuf;
use std::process::Command;

/// The database password: tests check it never shows in a log.
pub const DB_PASSWORD: &str = "pgw_db_password_7e6d5c4b";

pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

impl Postgres {
    /// A running server, or `None` (with a message) when PostgreSQL is not
    /// installed and not required.
    pub fn start(test: &str) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            if std::env::var_os("PLEO_GATEWAY_REQUIRE_POSTGRES").is_some() {
                panic!("PostgreSQL is required (PLEO_GATEWAY_REQUIRE_POSTGRES) but /usr/lib/postgresql/*/bin/initdb is missing");
            }
            eprintln!("SKIPPED {test}: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = nix::unistd::geteuid().is_root();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres").unwrap().expect("the postgres user");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, DB_PASSWORD).unwrap();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            nix::unistd::chown(&pwfile, Some(user.uid), Some(user.gid)).unwrap();
        }
        let data = dir.path().join("data");
        let pg = Postgres { port: free_port(), _dir: dir, data, bin, as_postgres };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--no-sync",
            ],
        );
        pg.start_again();
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again, after `stop`) on the same port and data.
    pub fn start_again(&self) {
        let sock = self.data.parent().unwrap().to_str().unwrap().to_string();
        let opts = format!("-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", self.port);
        let log = self.data.parent().unwrap().join("server.log");
        self.run(
            "pg_ctl",
            &["start", "-w", "-D", self.data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap()],
        );
    }

    /// Stops the server at once (clients see their connections drop).
    pub fn stop(&self) {
        self.run("pg_ctl", &["stop", "-w", "-m", "immediate", "-D", self.data.to_str().unwrap()]);
    }

    /// The connection URL, password included (it goes to the gateway through
    /// an environment variable, as a deployment would give it).
    pub fn url(&self) -> String {
        format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data.to_str().unwrap();
        let args = ["stop", "-w", "-m", "immediate", "-D", data];
        let _ = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&exe).args(args).output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

use super::free_port;
