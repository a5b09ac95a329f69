//! Where connect links and connections live: the same store as the OAuth
//! chains (`store.kind`). The file store keeps one `connect.json` in the
//! state directory, rewritten whole under a lock (links are few and their
//! uses rare); PostgreSQL keeps two tables (`postgres.rs`). A link is kept
//! only as the SHA-256 of its token; a key only sealed (AES-256-GCM).

use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::credential::store::{no_follow, write_private, StoreError, StoreFuture};

/// One connect link. `id` is what lists and revocations name (a prefix of
/// the token's hash, useless as a link); the token itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub id: String,
    pub token_sha256: String,
    pub tenant: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub used_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// Form submissions and OAuth starts on this link; bounded.
    pub attempts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Usable,
    Used,
    Expired,
    Revoked,
    /// Too many attempts: the link is spent.
    Locked,
}

/// Attempts one link allows (wrong keys, abandoned consents).
pub const MAX_ATTEMPTS: u32 = 10;

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Usable => "usable",
            LinkState::Used => "used",
            LinkState::Expired => "expired",
            LinkState::Revoked => "revoked",
            LinkState::Locked => "locked",
        }
    }
}

impl LinkRecord {
    pub fn state(&self, now_ms: u64) -> LinkState {
        if self.revoked_at_ms.is_some() {
            LinkState::Revoked
        } else if self.used_at_ms.is_some() {
            LinkState::Used
        } else if now_ms >= self.expires_at_ms {
            LinkState::Expired
        } else if self.attempts > MAX_ATTEMPTS {
            LinkState::Locked
        } else {
            LinkState::Usable
        }
    }
}

/// A tenant's connection: the sealed key (API-key tenants; OAuth tokens
/// live in the token store) and what is safe to show about it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub tenant: String,
    pub model: String,
    /// `v1:<key id>:<base64url(nonce | ciphertext | tag)>`.
    pub sealed_key: Option<String>,
    /// `key ••••abcd`.
    pub masked: String,
    pub company_id: Option<String>,
    pub connected_at_ms: u64,
    pub link_id: Option<String>,
    pub by: String,
}

// The sealed key is ciphertext, but there is no reason to print it either.
impl fmt::Debug for ConnectionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionRecord")
            .field("tenant", &self.tenant)
            .field("model", &self.model)
            .field("masked", &self.masked)
            .field("link_id", &self.link_id)
            .finish_non_exhaustive()
    }
}

/// Links and connections, durably. Every change is one atomic step, so two
/// replicas (or the CLI and a gateway) can never both use one link.
pub trait ConnectStore: Send + Sync + fmt::Debug + 'static {
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
    fn put_connection<'a>(&'a self, c: &'a ConnectionRecord) -> StoreFuture<'a, ()>;
    fn connections(&self) -> StoreFuture<'_, Vec<ConnectionRecord>>;
    /// `true` if there was one.
    fn delete_connection<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, bool>;
}

/// Links are kept this long after they stop being usable (for the list).
const KEEP_SPENT_MS: u64 = 30 * 24 * 3600 * 1000;

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    version: u32,
    links: Vec<LinkRecord>,
    connections: Vec<ConnectionRecord>,
}

/// `connect.json` in the state directory, changed under `connect.lock`
/// (an flock: the gateway and `pleo-gateway link` may write at once).
#[derive(Clone, Debug)]
pub struct FileConnectStore {
    dir: PathBuf,
}

impl FileConnectStore {
    pub fn new(dir: impl Into<PathBuf>) -> FileConnectStore {
        FileConnectStore { dir: dir.into() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("connect.json")
    }

    /// Runs `f` on the file's content under the lock; writes it back if `f` says it changed.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut FileForm) -> (bool, T) + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.with_blocking(f))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }

    fn with_blocking<T>(&self, f: impl FnOnce(&mut FileForm) -> (bool, T)) -> Result<T, StoreError> {
        if !self.path().exists() {
            // Nothing stored yet: a read creates nothing (no state_dir
            // appears just because the gateway looked for connections).
            let mut empty = FileForm { version: 1, ..FileForm::default() };
            let (changed, out) = f(&mut empty);
            if !changed {
                return Ok(out);
            }
            // Only new links and connections change an empty store; another
            // process may have written meanwhile, so add to what is there.
            self.locked(move |form| {
                form.links.extend(empty.links);
                for c in empty.connections {
                    form.connections.retain(|x| x.tenant != c.tenant);
                    form.connections.push(c);
                }
                (true, ())
            })?;
            return Ok(out);
        }
        self.locked(f)
    }

    fn locked<T>(&self, f: impl FnOnce(&mut FileForm) -> (bool, T)) -> Result<T, StoreError> {
        let path = self.path();
        let unwritable = |source| StoreError::Unwritable { path: path.clone(), source };
        crate::credential::store::prepare_dir(&self.dir).map_err(unwritable)?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(no_follow())
            .mode(0o600)
            .open(self.dir.join("connect.lock"))
            .map_err(unwritable)?;
        lock.lock().map_err(unwritable)?;
        let mut form = match std::fs::OpenOptions::new().read(true).custom_flags(no_follow()).open(&path) {
            Ok(file) => serde_json::from_reader(std::io::BufReader::new(file))
                .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileForm { version: 1, ..FileForm::default() },
            Err(source) => return Err(StoreError::Unreadable { path, source }),
        };
        if form.version != 1 {
            return Err(StoreError::Corrupt { path, reason: format!("unknown version {}", form.version) });
        }
        let (changed, out) = f(&mut form);
        if changed {
            let now = crate::credential::store::unix_now_ms();
            form.links.retain(|l| l.state(now) == LinkState::Usable || now < l.expires_at_ms + KEEP_SPENT_MS);
            let json = serde_json::to_vec_pretty(&form).expect("plain strings and numbers serialize");
            write_private(&self.dir, &path, &json).map_err(unwritable)?;
        }
        Ok(out)
    }
}

fn find<'a>(form: &'a mut FileForm, hash: &str) -> Option<&'a mut LinkRecord> {
    form.links.iter_mut().find(|l| l.token_sha256 == hash)
}

impl ConnectStore for FileConnectStore {
    fn put_link<'a>(&'a self, link: &'a LinkRecord) -> StoreFuture<'a, ()> {
        let link = link.clone();
        self.with(move |f| {
            f.links.push(link);
            (true, ())
        })
    }

    fn links(&self) -> StoreFuture<'_, Vec<LinkRecord>> {
        self.with(|f| (false, f.links.clone()))
    }

    fn link<'a>(&'a self, token_sha256: &'a str) -> StoreFuture<'a, Option<LinkRecord>> {
        let hash = token_sha256.to_string();
        self.with(move |f| (false, find(f, &hash).map(|l| l.clone())))
    }

    fn attempt<'a>(&'a self, token_sha256: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>> {
        let hash = token_sha256.to_string();
        self.with(move |f| match find(f, &hash) {
            Some(l) if l.state(now_ms) == LinkState::Usable => {
                l.attempts += 1;
                (true, Some(l.clone()))
            }
            Some(l) => (false, Some(l.clone())),
            None => (false, None),
        })
    }

    fn claim<'a>(&'a self, token_sha256: &'a str, now_ms: u64) -> StoreFuture<'a, bool> {
        let hash = token_sha256.to_string();
        self.with(move |f| match find(f, &hash) {
            Some(l) if l.state(now_ms) == LinkState::Usable => {
                l.used_at_ms = Some(now_ms);
                (true, true)
            }
            _ => (false, false),
        })
    }

    fn unclaim<'a>(&'a self, token_sha256: &'a str, claimed_ms: u64) -> StoreFuture<'a, ()> {
        let hash = token_sha256.to_string();
        self.with(move |f| match find(f, &hash) {
            Some(l) if l.used_at_ms == Some(claimed_ms) => {
                l.used_at_ms = None;
                (true, ())
            }
            _ => (false, ()),
        })
    }

    fn revoke<'a>(&'a self, id: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>> {
        let id = id.to_string();
        self.with(move |f| match f.links.iter_mut().find(|l| l.id == id) {
            Some(l) if l.used_at_ms.is_none() && l.revoked_at_ms.is_none() => {
                l.revoked_at_ms = Some(now_ms);
                (true, Some(l.clone()))
            }
            Some(l) => (false, Some(l.clone())),
            None => (false, None),
        })
    }

    fn put_connection<'a>(&'a self, c: &'a ConnectionRecord) -> StoreFuture<'a, ()> {
        let c = c.clone();
        self.with(move |f| {
            f.connections.retain(|x| x.tenant != c.tenant);
            f.connections.push(c);
            (true, ())
        })
    }

    fn connections(&self) -> StoreFuture<'_, Vec<ConnectionRecord>> {
        self.with(|f| (false, f.connections.clone()))
    }

    fn delete_connection<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, bool> {
        let tenant = tenant.to_string();
        self.with(move |f| {
            let before = f.connections.len();
            f.connections.retain(|x| x.tenant != tenant);
            let gone = f.connections.len() != before;
            (gone, gone)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times in these tests are offsets from now (spent links are pruned by the real clock).
    fn at(offset: u64) -> u64 {
        static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *BASE.get_or_init(crate::credential::store::unix_now_ms) + offset
    }

    fn link(hash: &str, expires: u64) -> LinkRecord {
        LinkRecord {
            id: hash[..4].to_string(),
            token_sha256: hash.to_string(),
            tenant: "acme".into(),
            created_by: "test".into(),
            created_at_ms: 0,
            expires_at_ms: at(expires),
            used_at_ms: None,
            revoked_at_ms: None,
            attempts: 0,
        }
    }

    #[tokio::test]
    async fn a_link_is_claimed_once_and_a_failed_use_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileConnectStore::new(dir.path().join("state"));
        store.put_link(&link("aaaa1111", 1_000)).await.unwrap();
        assert!(store.claim("aaaa1111", at(10)).await.unwrap());
        assert!(!store.claim("aaaa1111", at(11)).await.unwrap(), "second use refused");
        store.unclaim("aaaa1111", at(10)).await.unwrap();
        assert!(store.claim("aaaa1111", at(12)).await.unwrap());
        assert!(!store.claim("nope", at(12)).await.unwrap());
        store.put_link(&link("bbbb2222", 1_000)).await.unwrap();
        assert!(!store.claim("bbbb2222", at(1_000)).await.unwrap(), "expired");
        assert_eq!(store.revoke("bbbb", at(5)).await.unwrap().unwrap().state(at(5)), LinkState::Revoked);
        assert!(!store.claim("bbbb2222", at(6)).await.unwrap(), "revoked");
        assert_eq!(
            store.revoke("aaaa", at(13)).await.unwrap().unwrap().state(at(13)),
            LinkState::Used,
            "a used link stays used"
        );
    }

    #[tokio::test]
    async fn attempts_lock_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileConnectStore::new(dir.path());
        store.put_link(&link("cccc3333", 1_000)).await.unwrap();
        for i in 1..=MAX_ATTEMPTS {
            let l = store.attempt("cccc3333", at(1)).await.unwrap().unwrap();
            assert_eq!((l.attempts, l.state(at(1))), (i, LinkState::Usable));
        }
        let l = store.attempt("cccc3333", at(1)).await.unwrap().unwrap();
        assert_eq!(l.state(at(1)), LinkState::Locked);
        let l = store.attempt("cccc3333", at(1)).await.unwrap().unwrap();
        assert_eq!(l.attempts, MAX_ATTEMPTS + 1, "a locked link counts no more");
        assert!(!store.claim("cccc3333", at(2)).await.unwrap());
    }
}
