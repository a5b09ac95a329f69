//! `pleo-gateway store import`: state_dir's OAuth chains into PostgreSQL, once.

use std::io::Write;

use super::CommandError;
use crate::config::{Config, StoreConfig};

/// `store import`: copies every tenant's chain from `state_dir` into the
/// shared store, once. A tenant the database already has a chain for is
/// skipped (it may be newer: replicas may be running on it), and nothing
/// is sent to Pleo, so no token is spent or replayed.
pub async fn store_import(config: &Config, out: &mut impl Write) -> Result<(), CommandError> {
    use crate::state::postgres::PostgresStore;
    use crate::state::FileStore;
    let StoreConfig::Postgres(pg) = &config.store else {
        return Err(CommandError::Usage(
            "store import copies state_dir into a PostgreSQL store: set store.kind: postgres first".into(),
        ));
    };
    let files = FileStore::new(&config.state_dir);
    let dir = std::fs::read_dir(&config.state_dir)
        .map_err(|e| CommandError::Unavailable(format!("cannot read {}: {e}", config.state_dir.display())))?;
    let mut tenants: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    tenants.sort();
    let store = PostgresStore::for_command(pg).map_err(CommandError::Unavailable)?;
    let (mut imported, mut skipped) = (0, 0);
    for tenant in tenants {
        let Some(chain) = files.load_blocking(&tenant).map_err(|e| CommandError::Unavailable(e.to_string()))? else {
            continue;
        };
        if store.import(&tenant, &chain).await.map_err(|e| CommandError::Unavailable(e.to_string()))? {
            imported += 1;
            let _ = writeln!(out, "imported {tenant}");
        } else {
            skipped += 1;
            let _ = writeln!(out, "skipped {tenant}: the database already has a chain for it (left as it is)");
        }
    }
    let _ = writeln!(out, "{imported} imported, {skipped} skipped, from {}", config.state_dir.display());
    Ok(())
}
