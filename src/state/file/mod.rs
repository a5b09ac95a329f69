//! The embedded store: a JSON file per OAuth tenant in `state_dir`, written
//! to a temporary file, fsynced, renamed, mode 0600; links and onboarded
//! keys in one `connect.json` beside them (`onboarding.rs`).

mod onboarding;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{no_follow, unix_now_ms, write_private, StoreError, StoreFuture, StoredToken, TokenStore};
use crate::secret::{is_header_safe, Secret};

/// The on-disk form. Versioned so a later format can read this one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    version: u32,
    tenant: String,
    refresh_token: String,
    access_token: Option<String>,
    access_issued_at_ms: Option<u64>,
    access_expires_at_ms: Option<u64>,
    imported_from: Option<String>,
    #[serde(default)]
    reauthorization_required: bool,
    updated_at_ms: u64,
}

/// One JSON file per tenant in a directory (`state_dir`).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStore { dir: dir.into() }
    }

    pub fn path(&self, tenant: &str) -> PathBuf {
        // Tenant names are validated to [a-z0-9_-], so this stays in `dir`.
        self.dir.join(format!("{tenant}.json"))
    }

    pub fn load_blocking(&self, tenant: &str) -> Result<Option<StoredToken>, StoreError> {
        let path = self.path(tenant);
        let read = || -> std::io::Result<String> {
            use std::io::Read;
            let mut f = std::fs::OpenOptions::new().read(true).custom_flags(no_follow()).open(&path)?;
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            Ok(text)
        };
        let text = match read() {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Unreadable { path, source }),
        };
        // serde_json's messages give a position, never the content.
        let corrupt = |reason: String| StoreError::Corrupt { path: path.clone(), reason };
        let form: FileForm = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if form.version != 1 {
            return Err(corrupt(format!("unknown version {}", form.version)));
        }
        if form.tenant != tenant {
            return Err(corrupt(format!("it belongs to tenant `{}`", form.tenant)));
        }
        if !is_header_safe(&form.refresh_token) || form.access_token.as_deref().is_some_and(|t| !is_header_safe(t)) {
            return Err(corrupt("a token is empty or not visible ASCII".into()));
        }
        Ok(Some(StoredToken {
            refresh_token: Secret::new(form.refresh_token),
            access_token: form.access_token.map(Secret::new),
            access_issued_at_ms: form.access_issued_at_ms,
            access_expires_at_ms: form.access_expires_at_ms,
            imported_from: form.imported_from,
            reauthorization_required: form.reauthorization_required,
        }))
    }

    pub fn save_blocking(&self, tenant: &str, token: &StoredToken) -> Result<(), StoreError> {
        let path = self.path(tenant);
        let unwritable = |source| StoreError::Unwritable { path: path.clone(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(unwritable)?;
        let form = FileForm {
            version: 1,
            tenant: tenant.to_string(),
            refresh_token: token.refresh_token.expose_secret().to_string(),
            access_token: token.access_token.as_ref().map(|t| t.expose_secret().to_string()),
            access_issued_at_ms: token.access_issued_at_ms,
            access_expires_at_ms: token.access_expires_at_ms,
            imported_from: token.imported_from.clone(),
            reauthorization_required: token.reauthorization_required,
            updated_at_ms: unix_now_ms(),
        };
        let json = serde_json::to_vec_pretty(&form).expect("plain strings and numbers serialize");
        write_private(&self.dir, &path, &json).map_err(unwritable)
    }
}

impl TokenStore for FileStore {
    fn load<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Option<StoredToken>> {
        let (store, tenant) = (self.clone(), tenant.to_string());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.load_blocking(&tenant))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }

    fn save<'a>(&'a self, tenant: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        let (store, tenant, token) = (self.clone(), tenant.to_string(), token.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.save_blocking(&tenant, &token))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token(rt: &str) -> StoredToken {
        StoredToken {
            refresh_token: Secret::new(rt),
            access_token: Some(Secret::new("at_1234567890")),
            access_issued_at_ms: Some(unix_now_ms()),
            access_expires_at_ms: Some(unix_now_ms() + 60_000),
            imported_from: Some("abc".into()),
            reauthorization_required: false,
        }
    }

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("state"));
        assert!(store.load_blocking("acme").unwrap().is_none());
        store.save_blocking("acme", &token("rt_one")).unwrap();
        let newest = token("rt_two");
        store.save_blocking("acme", &newest).unwrap();
        assert_eq!(store.load_blocking("acme").unwrap(), Some(newest));
        let mode = std::fs::metadata(store.path("acme")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("state")).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_or_foreign_state_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        std::fs::write(store.path("acme"), "{ not json").unwrap();
        let e = store.load_blocking("acme").unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("acme.json"), "{e}");
        store.save_blocking("globex", &token("rt_x")).unwrap();
        std::fs::rename(store.path("globex"), store.path("acme")).unwrap();
        let e = store.load_blocking("acme").unwrap_err().to_string();
        assert!(e.contains("belongs to tenant `globex`"), "{e}");
        assert!(!format!("{:?}", token("rt_secret_value")).contains("rt_secret_value"));
    }
}
