//! Links and onboarded keys in the file store: one `connect.json` in the
//! state directory, rewritten whole under a lock (links are few and their
//! uses rare). A link is kept only as the SHA-256 of its token; a key only
//! sealed (AES-256-GCM).

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::FileStore;
use crate::state::{no_follow, open_lock_file, prepare_dir, write_private, StoreError, StoreFuture};
use crate::state::{InstallRecord, LinkRecord, LinkState, OnboardedKey, OnboardingStore};

/// Links are kept this long after they stop being usable (for the list).
const KEEP_SPENT_MS: u64 = 30 * 24 * 3600 * 1000;

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    version: u32,
    links: Vec<LinkRecord>,
    /// The file's name for onboarded keys since version 1.
    #[serde(rename = "connections")]
    onboarded: Vec<OnboardedKey>,
    /// Tenants installs from Pleo made (absent until the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    installs: Vec<InstallRecord>,
}

/// `connect.json` in the state directory, changed under `connect.lock`
/// (an flock: the gateway and `pleo-gateway link` may write at once).
impl FileStore {
    fn onboarding_path(&self) -> PathBuf {
        self.dir.join("connect.json")
    }

    /// Runs `f` on the file's content under the lock; writes it back if `f` says it changed.
    fn with_onboarding<T: Send + 'static>(
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
        if !self.onboarding_path().exists() {
            // Nothing stored yet: a read creates nothing (no state_dir
            // appears just because the gateway looked for onboarded keys).
            let mut empty = FileForm { version: 1, ..FileForm::default() };
            let (changed, out) = f(&mut empty);
            if !changed {
                return Ok(out);
            }
            // Only new links and keys change an empty store; another
            // process may have written meanwhile, so add to what is there.
            self.locked(move |form| {
                form.links.extend(empty.links);
                for c in empty.onboarded {
                    form.onboarded.retain(|x| x.tenant != c.tenant);
                    form.onboarded.push(c);
                }
                for i in empty.installs {
                    form.installs.retain(|x| x.tenant != i.tenant);
                    form.installs.push(i);
                }
                (true, ())
            })?;
            return Ok(out);
        }
        self.locked(f)
    }

    fn locked<T>(&self, f: impl FnOnce(&mut FileForm) -> (bool, T)) -> Result<T, StoreError> {
        let path = self.onboarding_path();
        let unwritable = |source| StoreError::Unwritable { path: path.clone(), source };
        prepare_dir(&self.dir).map_err(unwritable)?;
        let lock = open_lock_file(&self.dir.join("connect.lock")).map_err(unwritable)?;
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
            let now = crate::state::unix_now_ms();
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

impl OnboardingStore for FileStore {
    fn put_link<'a>(&'a self, link: &'a LinkRecord) -> StoreFuture<'a, ()> {
        let link = link.clone();
        self.with_onboarding(move |f| {
            f.links.push(link);
            (true, ())
        })
    }

    fn links(&self) -> StoreFuture<'_, Vec<LinkRecord>> {
        self.with_onboarding(|f| (false, f.links.clone()))
    }

    fn link<'a>(&'a self, token_sha256: &'a str) -> StoreFuture<'a, Option<LinkRecord>> {
        let hash = token_sha256.to_string();
        self.with_onboarding(move |f| (false, find(f, &hash).map(|l| l.clone())))
    }

    fn attempt<'a>(&'a self, token_sha256: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>> {
        let hash = token_sha256.to_string();
        self.with_onboarding(move |f| match find(f, &hash) {
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
        self.with_onboarding(move |f| match find(f, &hash) {
            Some(l) if l.state(now_ms) == LinkState::Usable => {
                l.used_at_ms = Some(now_ms);
                (true, true)
            }
            _ => (false, false),
        })
    }

    fn unclaim<'a>(&'a self, token_sha256: &'a str, claimed_ms: u64) -> StoreFuture<'a, ()> {
        let hash = token_sha256.to_string();
        self.with_onboarding(move |f| match find(f, &hash) {
            Some(l) if l.used_at_ms == Some(claimed_ms) => {
                l.used_at_ms = None;
                (true, ())
            }
            _ => (false, ()),
        })
    }

    fn revoke<'a>(&'a self, id: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>> {
        let id = id.to_string();
        self.with_onboarding(move |f| match f.links.iter_mut().find(|l| l.id == id) {
            Some(l) if l.used_at_ms.is_none() && l.revoked_at_ms.is_none() => {
                l.revoked_at_ms = Some(now_ms);
                (true, Some(l.clone()))
            }
            Some(l) => (false, Some(l.clone())),
            None => (false, None),
        })
    }

    fn put_onboarded<'a>(&'a self, c: &'a OnboardedKey) -> StoreFuture<'a, ()> {
        let c = c.clone();
        self.with_onboarding(move |f| {
            f.onboarded.retain(|x| x.tenant != c.tenant);
            f.onboarded.push(c);
            (true, ())
        })
    }

    fn onboarded(&self) -> StoreFuture<'_, Vec<OnboardedKey>> {
        self.with_onboarding(|f| (false, f.onboarded.clone()))
    }

    fn delete_onboarded<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, bool> {
        let tenant = tenant.to_string();
        self.with_onboarding(move |f| {
            let before = f.onboarded.len();
            f.onboarded.retain(|x| x.tenant != tenant);
            let gone = f.onboarded.len() != before;
            (gone, gone)
        })
    }

    fn put_install<'a>(&'a self, r: &'a InstallRecord) -> StoreFuture<'a, ()> {
        let r = r.clone();
        self.with_onboarding(move |f| {
            match f.installs.iter_mut().find(|x| x.tenant == r.tenant) {
                Some(x) => *x = r,
                None => f.installs.push(r),
            }
            (true, ())
        })
    }

    fn installs<'a>(&'a self, held: &'a [Arc<InstallRecord>]) -> StoreFuture<'a, Vec<Arc<InstallRecord>>> {
        let read = self.with_onboarding(|f| (false, std::mem::take(&mut f.installs)));
        Box::pin(async move {
            let mut held = crate::state::installs::Held::new(held);
            Ok(read.await?.into_iter().map(|r| held.keep(r)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MAX_ATTEMPTS;

    /// Times in these tests are offsets from now (spent links are pruned by the real clock).
    fn at(offset: u64) -> u64 {
        static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *BASE.get_or_init(crate::state::unix_now_ms) + offset
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
        let store = FileStore::new(dir.path().join("state"));
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
        let store = FileStore::new(dir.path());
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
