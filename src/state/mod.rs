//! Everything the gateway keeps between requests and across restarts, in
//! one place: OAuth token chains (`tokens`), connect links (`links`) and
//! keys customers entered (`keys`), in one store of the configured kind:
//! files in `state_dir` (`file`) or PostgreSQL shared by replicas
//! (`postgres`, with the whole schema history). [`open`] gives the one
//! store; its errors are [`StoreError`] whatever the kind.

pub mod file;
pub mod installs;
pub mod keys;
pub mod links;
pub mod postgres;
pub mod tokens;

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use file::FileStore;
pub use installs::InstallRecord;
pub use keys::OnboardedKey;
pub use links::{LinkRecord, LinkState, MAX_ATTEMPTS};
pub use postgres::PostgresStore;
pub use tokens::{fingerprint, Lease, Leased, StoreHealth, StoredToken, TokenStore};

/// The wall clock in milliseconds since the epoch: what records keep.
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

/// Links and the keys customers entered on them, durably. Every change is
/// one atomic step, so two replicas (or the CLI and a gateway) can never
/// both use one link.
pub trait OnboardingStore: Send + Sync + fmt::Debug + 'static {
    fn put_link<'a>(&'a self, link: &'a LinkRecord) -> StoreFuture<'a, ()>;
    fn links(&self) -> StoreFuture<'_, Vec<LinkRecord>>;
    fn link<'a>(&'a self, token_sha256: &'a str) -> StoreFuture<'a, Option<LinkRecord>>;
    /// Counts one attempt on a usable link; the record after (`Locked` once
    /// the attempts are spent), or `None` if there is no such link.
    fn attempt<'a>(&'a self, token_sha256: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>>;
    /// Marks a usable link used at `now_ms`; `false` if it was not usable
    /// (used meanwhile, revoked, expired, locked).
    fn claim<'a>(&'a self, token_sha256: &'a str, now_ms: u64) -> StoreFuture<'a, bool>;
    /// Gives back a claim made at `claimed_ms` whose use then failed.
    fn unclaim<'a>(&'a self, token_sha256: &'a str, claimed_ms: u64) -> StoreFuture<'a, ()>;
    /// Revokes the link `id` unless it is used; the record after.
    fn revoke<'a>(&'a self, id: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>>;
    fn put_onboarded<'a>(&'a self, c: &'a OnboardedKey) -> StoreFuture<'a, ()>;
    fn onboarded(&self) -> StoreFuture<'_, Vec<OnboardedKey>>;
    /// `true` if there was one.
    fn delete_onboarded<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, bool>;
    /// Creates or replaces the install of `r.tenant`.
    fn put_install<'a>(&'a self, r: &'a InstallRecord) -> StoreFuture<'a, ()>;
    /// Every install, each in its own allocation: the routing table's
    /// tenants and `Installs` share them (an unchanged one is kept, not copied).
    /// `held`: the records the caller holds; one that did not change is
    /// given back as it is (`Held`).
    fn installs<'a>(
        &'a self,
        held: &'a [std::sync::Arc<InstallRecord>],
    ) -> StoreFuture<'a, Vec<std::sync::Arc<InstallRecord>>>;
    /// With a shared store: a message each time another replica changed an
    /// install (or a missed change may have happened); `None` for a store
    /// only this process writes.
    fn install_changes(&self) -> Option<tokio::sync::broadcast::Receiver<()>> {
        None
    }
}

/// The one store: token chains, links and onboarded keys side by side.
pub trait Store: TokenStore + OnboardingStore {}

impl<T: TokenStore + OnboardingStore> Store for T {}

/// The configured store. A shared store also starts following the changes
/// other replicas make (until `stop`); must run inside tokio then.
pub fn open(
    config: &crate::config::Config,
    metrics: &crate::metrics::Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<dyn Store>, String> {
    match &config.store {
        crate::config::StoreConfig::File => {
            // Nothing remote to be down: the gauge reads up.
            metrics.store.up.set(1);
            Ok(Arc::new(FileStore::new(&config.state_dir)))
        }
        crate::config::StoreConfig::Postgres(pg) => {
            let store = Arc::new(PostgresStore::new(pg, metrics.store.clone())?);
            store.spawn_watch(stop);
            Ok(store)
        }
    }
}

/// The configured store for an operator command (`link`, `check`,
/// `explain`): no watch, throwaway metrics.
pub fn open_for_command(config: &crate::config::Config) -> Result<Arc<dyn Store>, String> {
    match &config.store {
        crate::config::StoreConfig::File => Ok(Arc::new(FileStore::new(&config.state_dir))),
        crate::config::StoreConfig::Postgres(pg) => Ok(Arc::new(PostgresStore::for_command(pg)?)),
    }
}

// === files: private, crash-safe, never through a symlink ===

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

/// A lock file (created private, kept as it is, never through a symlink),
/// for `flock`: the `state_dir` lock and the file store's `connect.lock`.
pub(crate) fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(no_follow())
        .mode(0o600)
        .open(path)
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
        let mut file = open_lock_file(&path)?;
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
