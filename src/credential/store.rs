//! Where rotated OAuth tokens live between refreshes and across restarts.
//!
//! Pleo rotates the refresh token on every refresh and treats a replay of an
//! old one as theft (the whole authorisation is revoked). So the newest
//! refresh token must be on disk before the access token that came with it is
//! used: a crash right after a refresh must come back with the new token.
//!
//! [`TokenStore`] is the seam for a shared store later (several replicas,
//! one authorisation); the session calls it only on the refresh path, never
//! per request. [`FileStore`] is the embedded one: a JSON file per tenant in
//! `state_dir`, written to a temporary file, fsynced, renamed, mode 0600.

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::{is_header_safe, Secret};

/// What is kept for one OAuth tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub refresh_token: Secret,
    pub access_token: Option<Secret>,
    /// When the access token was asked for and when it expires, in Unix
    /// milliseconds (second precision is too coarse for short-lived tokens).
    pub access_issued_at_ms: Option<u64>,
    pub access_expires_at_ms: Option<u64>,
    /// Fingerprint of the config's initial `refresh_token` this chain was
    /// imported from (or that was already in the config when `connect` ran).
    /// A different fingerprint in the config means a new consent to import.
    pub imported_from: Option<String>,
    /// The token endpoint answered `invalid_grant`: consent must be renewed;
    /// the gateway does not call the token endpoint with this chain again.
    pub reauthorization_required: bool,
}

// Tokens never printed; what is useful for debugging is.
impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_expires_at_ms", &self.access_expires_at_ms)
            .field("reauthorization_required", &self.reauthorization_required)
            .finish_non_exhaustive()
    }
}

impl StoredToken {
    /// A new consent's refresh token from the config, with its fingerprint.
    pub fn imported(refresh_token: Secret, fingerprint: String) -> StoredToken {
        StoredToken {
            refresh_token,
            access_token: None,
            access_issued_at_ms: None,
            access_expires_at_ms: None,
            imported_from: Some(fingerprint),
            reauthorization_required: false,
        }
    }

    /// This chain after a refresh the endpoint answered with `tokens`
    /// (asked at `issued_ms`); Pleo always rotates, but a server that kept
    /// the refresh token (RFC 6749 6) keeps the old one.
    pub fn rotated(self, tokens: super::token_endpoint::Tokens, issued_ms: u64) -> StoredToken {
        StoredToken {
            refresh_token: tokens.refresh_token.unwrap_or(self.refresh_token),
            access_token: Some(tokens.access_token),
            access_issued_at_ms: Some(issued_ms),
            access_expires_at_ms: Some(issued_ms + tokens.expires_in.as_millis() as u64),
            imported_from: self.imported_from,
            reauthorization_required: false,
        }
    }

    /// This chain, dead (`invalid_grant`): a new consent is needed.
    pub fn needing_reauthorization(&self) -> StoredToken {
        StoredToken {
            access_token: None,
            access_issued_at_ms: None,
            access_expires_at_ms: None,
            reauthorization_required: true,
            ..self.clone()
        }
    }
}

/// A fingerprint of a refresh token, to recognise it later without keeping it.
pub fn fingerprint(token: &Secret) -> String {
    hex::encode(&Sha256::digest(token.expose_secret().as_bytes())[..16])
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the token state {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the token state {path} is corrupt ({reason}); the gateway will not fall back to an older token. \
         Restore the file from a backup, or delete it and run `pleo-gateway connect` (or set a new refresh_token)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the token state {path}: {source}")]
    Unwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token store task failed: {0}")]
    Task(String),
    /// The shared store (PostgreSQL) did not answer; the message never holds the URL.
    #[error("the shared token store (PostgreSQL) is unreachable: {0}")]
    Unavailable(String),
    /// The shared store holds something this gateway cannot use.
    #[error("the shared token store (PostgreSQL) refused: {0}")]
    Refused(String),
    /// The lease ran out and another replica took it: its chain is newer.
    #[error("another replica took over this refresh (our lease ran out); its tokens are newer")]
    Fenced,
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The right to refresh one tenant's chain until it is committed or
/// released. In a shared store it also runs out (its holder may have died),
/// and `generation` then fences the late holder: its commit is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub generation: i64,
}

/// What asking for a lease gives.
#[derive(Debug)]
pub enum Leased {
    Held {
        lease: Lease,
        /// The tenant's chain as it stands under the lease.
        stored: Option<StoredToken>,
        /// A previous holder marked a refresh in flight and never committed
        /// (it died, or lost the store, after asking Pleo): the stored
        /// refresh token may already be retired.
        interrupted: bool,
    },
    /// Another replica holds the lease and is refreshing.
    Busy,
}

/// Durable storage of each OAuth tenant's newest tokens.
///
/// A refresh goes `lease` -> (`mark_in_flight` -> token endpoint) ->
/// `commit`, or `release` when nothing was asked. The file store serves one
/// process (it locks its directory), so its lease is the session's own
/// flight lock and these default to plain loads and saves; the shared store
/// makes them a cross-replica lock with fencing (docs/oauth.md, "Replicas").
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The tenant's stored tokens; `Ok(None)` if there are none yet.
    fn load<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, Option<StoredToken>>;
    /// Durably replaces the tenant's tokens: when this returns `Ok`, a crash
    /// cannot bring back the previous ones. Outside a refresh (a new consent
    /// from `connect`): it also ends any lease another holder has.
    fn save<'a>(&'a self, tenant: &'a str, token: &'a StoredToken) -> StoreFuture<'a, ()>;

    /// Takes the tenant's refresh lease for `ttl`, with its stored chain.
    fn lease<'a>(&'a self, tenant: &'a str, _ttl: Duration) -> StoreFuture<'a, Leased> {
        Box::pin(async move {
            let stored = self.load(tenant).await?;
            Ok(Leased::Held { lease: Lease { generation: 0 }, stored, interrupted: false })
        })
    }

    /// Records, before the token endpoint is called, that a refresh is in flight.
    fn mark_in_flight<'a>(&'a self, _tenant: &'a str, _lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Writes the tokens a refresh brought and ends the lease; refused with
    /// [`StoreError::Fenced`] when the lease was lost.
    fn commit<'a>(&'a self, tenant: &'a str, _lease: Lease, token: &'a StoredToken) -> StoreFuture<'a, ()> {
        self.save(tenant, token)
    }

    /// Ends the lease without a write (nothing was asked of Pleo, or it refused).
    fn release<'a>(&'a self, _tenant: &'a str, _lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Several tenants' stored tokens at once (those that have any), for
    /// taking up a burst of other replicas' changes in one round trip.
    fn load_many<'a>(&'a self, tenants: &'a [Box<str>]) -> StoreFuture<'a, Vec<(Box<str>, StoredToken)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for t in tenants {
                if let Some(s) = self.load(t).await? {
                    out.push((t.clone(), s));
                }
            }
            Ok(out)
        })
    }

    /// Tenants whose state another replica changed, for stores shared by
    /// several processes.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Box<str>>> {
        None
    }

    /// Whether the store answers now, and if not why (for `/readyz` and `/tenants`).
    fn health(&self) -> StoreHealth {
        StoreHealth { kind: "file", up: true, error: None }
    }
}

/// What `/readyz` and `/tenants` say about the store.
#[derive(Clone, Debug)]
pub struct StoreHealth {
    pub kind: &'static str,
    pub up: bool,
    pub error: Option<String>,
}

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

/// `open(2)` flag: fail on a symlink where the state file should be, so
/// nobody with write access to a parent can redirect our reads or writes.
pub(crate) fn no_follow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// An unpredictable suffix for temporary files (a predictable name can be
/// pre-created by someone else, as a symlink or a file they can read).
fn random_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut b).expect("the OS random source works");
    hex::encode(b)
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

/// Writes `bytes` to `path` (in `dir`) so that a crash leaves the old
/// content or the new, never a mix: a private temporary file, fsynced,
/// renamed over, and the directory synced.
pub fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", random_suffix()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(no_follow())
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a crash: sync the directory entry.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

/// Checks that `dir` can hold token state safely (creating it 0700 if
/// needed), so a read-only mount or a shared directory is reported before
/// the first refresh needs it: it must be ours and writable by nobody else
/// (whoever can write there can swap a tenant's refresh token).
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("it is not a directory"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "it is owned by uid {}, but the gateway runs as uid {me}; give it to the gateway's user \
             (chown {me} {}) or point state_dir at a directory of its own",
            meta.uid(),
            dir.display()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "it is writable by its group or by everyone (mode {:o}); make it private: chmod 700 {} \
             (or point state_dir at a subdirectory, which the gateway creates with mode 0700)",
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    let probe = dir.join(format!(".probe.{}", random_suffix()));
    std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(no_follow()).mode(0o600).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The exclusive lock one gateway process holds on its `state_dir` for as
/// long as it runs: two processes refreshing one tenant's chain would
/// replay each other's rotated tokens, and Pleo then revokes the consent.
#[derive(Debug, Default)]
pub struct StateLock(std::sync::Mutex<Option<std::fs::File>>);

impl StateLock {
    /// Checks `dir` (see [`prepare_dir`]) and locks it, unless already
    /// locked by this process. A second process gets an error naming the
    /// holder's PID.
    pub fn acquire(&self, dir: &Path) -> std::io::Result<()> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() {
            return Ok(());
        }
        prepare_dir(dir)?;
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(no_follow())
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                use std::io::Read;
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() { "another process".to_string() } else { format!("process {pid}") };
                return Err(std::io::Error::other(format!(
                    "{holder} (another pleo-gateway) holds its lock ({}); two gateways on one state_dir would \
                     replay each other's rotated OAuth tokens and get the customers' consents revoked. Stop the \
                     other one, or give this one its own state_dir",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        *held = Some(file);
        Ok(())
    }

    /// Gives the lock back (at shutdown, once refreshes are done).
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
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
