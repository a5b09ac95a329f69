//! A tenant an install from Pleo created: which app, which company or
//! organisation, who installed it and where the installation stands. The
//! credential itself is elsewhere: an OAuth chain in the token store, a
//! key sealed in the onboarded keys, both under the tenant's name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{AuthModel, Environment};

/// One install, as stored (the file store's `connect.json`, PostgreSQL's
/// `pleo_gateway_installs`). Nothing in it is a secret.
///
/// Compact because a gateway holds every install: the name is the one the
/// routing table and the sessions use (`Arc`), the app and status are
/// shared by the installs that have the same ([`Held`]), and environment
/// and model are the config's enums (same words on the wire). At 100,000
/// installs the `String`s were ~40 MB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRecord {
    /// The tenant's name (the app's `tenant_name` over the company id).
    pub tenant: Arc<str>,
    pub app: Arc<str>,
    /// The app's, when it was installed.
    pub environment: Environment,
    /// `oauth2` or `integrated_api_key`.
    pub model: AuthModel,
    /// Pleo's `resource`: `urn:pleo:company:<id>` or `urn:pleo:organization:<id>`.
    pub resource: Box<str>,
    /// Pleo's installation status when last seen (`ACTIVATED`, ...).
    pub status: Arc<str>,
    pub error_code: Option<Box<str>>,
    /// The handover token's `sub` (the Pleo user), when the install came with one.
    pub installed_by: Option<Box<str>>,
    pub installed_at_ms: u64,
    pub updated_at_ms: u64,
    /// Set when the install was removed (Settings, the API, or Pleo's side).
    pub uninstalled_at_ms: Option<u64>,
    /// Who uninstalled it: `settings:<user>`, `api:<token name>`, `pleo` (seen as a revoked grant).
    pub uninstalled_by: Option<Box<str>>,
    /// The last thing that went wrong with it, in words (no secret).
    pub last_error: Option<Box<str>>,
}

impl InstallRecord {
    pub fn is_installed(&self) -> bool {
        self.uninstalled_at_ms.is_none()
    }
}

/// The records already held (the routing table's), by tenant: a store
/// reading every install again keeps each one that did not change instead
/// of a second copy. Each replica reads all installs whenever any replica
/// installs one; at 100,000 installs a whole second set was ~50 MB, held
/// while the table was rebuilt. New records share their app's name and
/// their status with the records read before them.
#[derive(Debug, Default)]
pub struct Held<'a> {
    records: HashMap<&'a str, &'a Arc<InstallRecord>>,
    words: HashSet<Arc<str>>,
}

impl<'a> Held<'a> {
    pub fn new(held: &'a [Arc<InstallRecord>]) -> Held<'a> {
        Held { records: held.iter().map(|r| (&*r.tenant, r)).collect(), words: HashSet::new() }
    }

    /// `read`, or the held record equal to it.
    pub fn keep(&mut self, mut read: InstallRecord) -> Arc<InstallRecord> {
        if let Some(held) = self.records.get(&*read.tenant).filter(|h| ****h == read) {
            return Arc::clone(held);
        }
        for word in [&mut read.app, &mut read.status] {
            match self.words.get(&**word) {
                Some(shared) => *word = shared.clone(),
                None => {
                    self.words.insert(word.clone());
                }
            }
        }
        Arc::new(read)
    }
}

/// An integrated-key install of the app `ledger` for `company`, for unit tests.
#[cfg(test)]
pub(crate) fn ledger_install(company: &str, status: &str) -> InstallRecord {
    InstallRecord {
        tenant: format!("ledger-{company}").into(),
        app: "ledger".into(),
        environment: Environment::Staging,
        model: AuthModel::IntegratedApiKey,
        resource: format!("urn:pleo:company:{company}").into(),
        status: status.into(),
        error_code: None,
        installed_by: None,
        installed_at_ms: 1,
        updated_at_ms: 1,
        uninstalled_at_ms: None,
        uninstalled_by: None,
        last_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(company: &str, status: &str) -> InstallRecord {
        ledger_install(company, status)
    }

    /// Records stored before they were compact (every field a string)
    /// read as they were, and are written back with the same words.
    #[test]
    fn a_record_stored_as_strings_reads_and_writes_the_same() {
        let stored = r#"{"tenant":"erp-c1","app":"erp","environment":"production","model":"oauth2","resource":"urn:pleo:company:c1","status":"ACTIVATED","error_code":null,"installed_by":"user-1","installed_at_ms":5,"updated_at_ms":6,"uninstalled_at_ms":null,"uninstalled_by":null,"last_error":null}"#;
        let r: InstallRecord = serde_json::from_str(stored).unwrap();
        assert_eq!((r.environment, r.model), (Environment::Production, AuthModel::OAuth2));
        assert_eq!((&*r.tenant, &*r.status, r.installed_by.as_deref()), ("erp-c1", "ACTIVATED", Some("user-1")));
        assert_eq!(serde_json::to_string(&r).unwrap(), stored);
        let key = stored.replace("production", "staging").replace("oauth2", "integrated_api_key");
        let k: InstallRecord = serde_json::from_str(&key).unwrap();
        assert_eq!((k.environment, k.model), (Environment::Staging, AuthModel::IntegratedApiKey));
    }

    /// Another replica's install makes every replica read all installs
    /// again: the unchanged ones come back as the very records held, so
    /// nothing is copied and the routing table takes their tenants over.
    #[test]
    fn a_second_read_keeps_the_records_that_did_not_change() {
        let held = vec![Arc::new(record("c1", "ACTIVATED")), Arc::new(record("c2", "ACTIVATED"))];
        let mut keep = Held::new(&held);
        assert!(Arc::ptr_eq(&keep.keep(record("c1", "ACTIVATED")), &held[0]), "unchanged: the held record");
        let changed = keep.keep(record("c2", "INACTIVE"));
        assert!(!Arc::ptr_eq(&changed, &held[1]), "changed: the one read");
        assert_eq!(&*changed.status, "INACTIVE");
        let new = keep.keep(record("c3", "INACTIVE"));
        assert_eq!(&*new.tenant, "ledger-c3", "new: the one read");
        assert!(Arc::ptr_eq(&new.app, &changed.app), "one app name for the records read");
        assert!(Arc::ptr_eq(&new.status, &changed.status), "one status word for the records read");
    }
}
