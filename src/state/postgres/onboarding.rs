//! Links and connections in the shared store (schema version 2). Each
//! change is one statement, so a link is used once across all replicas.

use std::sync::Arc;

use futures_util::TryStreamExt;
use tokio_postgres::Row;

use super::{unavailable, PostgresStore};
use crate::state::StoreFuture;
use crate::state::{InstallRecord, LinkRecord, OnboardedKey, OnboardingStore, MAX_ATTEMPTS};

const LINK_COLUMNS: &str =
    "id, token_sha256, tenant, created_by, created_at_ms, expires_at_ms, used_at_ms, revoked_at_ms, attempts";
const CONNECTION_COLUMNS: &str =
    "tenant, model, sealed_key, masked, company_id, connected_at_ms, link_id, connected_by";

fn ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn link_from(row: &Row) -> LinkRecord {
    let opt = |i: usize| row.get::<_, Option<i64>>(i).map(|v| v.max(0) as u64);
    LinkRecord {
        id: row.get(0),
        token_sha256: row.get(1),
        tenant: row.get(2),
        created_by: row.get(3),
        created_at_ms: row.get::<_, i64>(4).max(0) as u64,
        expires_at_ms: row.get::<_, i64>(5).max(0) as u64,
        used_at_ms: opt(6),
        revoked_at_ms: opt(7),
        attempts: row.get::<_, i32>(8).max(0) as u32,
    }
}

fn connection_from(row: &Row) -> OnboardedKey {
    OnboardedKey {
        tenant: row.get(0),
        model: row.get(1),
        sealed_key: row.get(2),
        masked: row.get(3),
        company_id: row.get(4),
        connected_at_ms: row.get::<_, i64>(5).max(0) as u64,
        link_id: row.get(6),
        by: row.get(7),
    }
}

/// A usable link, in SQL (the same rule as `LinkRecord::state`).
const USABLE: &str = "used_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $2";

impl OnboardingStore for PostgresStore {
    fn put_link<'a>(&'a self, l: &'a LinkRecord) -> StoreFuture<'a, ()> {
        Box::pin(self.run("link", async move |c| {
            c.execute(
                &format!("INSERT INTO pleo_gateway_connect_links ({LINK_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"),
                &[
                    &l.id,
                    &l.token_sha256,
                    &l.tenant,
                    &l.created_by,
                    &ms(l.created_at_ms),
                    &ms(l.expires_at_ms),
                    &l.used_at_ms.map(ms),
                    &l.revoked_at_ms.map(ms),
                    &(l.attempts as i32),
                ],
            )
            .await
            .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn links(&self) -> StoreFuture<'_, Vec<LinkRecord>> {
        Box::pin(self.run("link", async move |c| {
            let sql = format!("SELECT {LINK_COLUMNS} FROM pleo_gateway_connect_links ORDER BY created_at_ms");
            Ok(c.query(&sql, &[]).await.map_err(unavailable)?.iter().map(link_from).collect())
        }))
    }

    fn link<'a>(&'a self, hash: &'a str) -> StoreFuture<'a, Option<LinkRecord>> {
        Box::pin(self.run("link", async move |c| {
            let sql = format!("SELECT {LINK_COLUMNS} FROM pleo_gateway_connect_links WHERE token_sha256 = $1");
            Ok(c.query_opt(&sql, &[&hash]).await.map_err(unavailable)?.as_ref().map(link_from))
        }))
    }

    fn attempt<'a>(&'a self, hash: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>> {
        Box::pin(self.run("link", async move |c| {
            let max = MAX_ATTEMPTS as i32;
            let sql = format!(
                "UPDATE pleo_gateway_connect_links SET attempts = attempts + 1 \
                 WHERE token_sha256 = $1 AND {USABLE} AND attempts <= $3 RETURNING {LINK_COLUMNS}"
            );
            if let Some(row) = c.query_opt(&sql, &[&hash, &ms(now_ms), &max]).await.map_err(unavailable)? {
                return Ok(Some(link_from(&row)));
            }
            let sql = format!("SELECT {LINK_COLUMNS} FROM pleo_gateway_connect_links WHERE token_sha256 = $1");
            Ok(c.query_opt(&sql, &[&hash]).await.map_err(unavailable)?.as_ref().map(link_from))
        }))
    }

    fn claim<'a>(&'a self, hash: &'a str, now_ms: u64) -> StoreFuture<'a, bool> {
        Box::pin(self.run("link", async move |c| {
            let sql = format!(
                "UPDATE pleo_gateway_connect_links SET used_at_ms = $2 \
                 WHERE token_sha256 = $1 AND {USABLE} AND attempts <= $3"
            );
            let n = c.execute(&sql, &[&hash, &ms(now_ms), &(MAX_ATTEMPTS as i32)]).await.map_err(unavailable)?;
            Ok(n == 1)
        }))
    }

    fn unclaim<'a>(&'a self, hash: &'a str, claimed_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(self.run("link", async move |c| {
            c.execute(
                "UPDATE pleo_gateway_connect_links SET used_at_ms = NULL WHERE token_sha256 = $1 AND used_at_ms = $2",
                &[&hash, &ms(claimed_ms)],
            )
            .await
            .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn revoke<'a>(&'a self, id: &'a str, now_ms: u64) -> StoreFuture<'a, Option<LinkRecord>> {
        Box::pin(self.run("link", async move |c| {
            c.execute(
                "UPDATE pleo_gateway_connect_links SET revoked_at_ms = $2 \
                 WHERE id = $1 AND used_at_ms IS NULL AND revoked_at_ms IS NULL",
                &[&id, &ms(now_ms)],
            )
            .await
            .map_err(unavailable)?;
            let sql = format!("SELECT {LINK_COLUMNS} FROM pleo_gateway_connect_links WHERE id = $1");
            Ok(c.query_opt(&sql, &[&id]).await.map_err(unavailable)?.as_ref().map(link_from))
        }))
    }

    fn put_onboarded<'a>(&'a self, r: &'a OnboardedKey) -> StoreFuture<'a, ()> {
        Box::pin(self.run("onboarded", async move |c| {
            c.execute(
                &format!(
                    "INSERT INTO pleo_gateway_connections ({CONNECTION_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
                     ON CONFLICT (tenant) DO UPDATE SET model = EXCLUDED.model, sealed_key = EXCLUDED.sealed_key, \
                     masked = EXCLUDED.masked, company_id = EXCLUDED.company_id, \
                     connected_at_ms = EXCLUDED.connected_at_ms, link_id = EXCLUDED.link_id, \
                     connected_by = EXCLUDED.connected_by"
                ),
                &[
                    &r.tenant,
                    &r.model,
                    &r.sealed_key,
                    &r.masked,
                    &r.company_id,
                    &ms(r.connected_at_ms),
                    &r.link_id,
                    &r.by,
                ],
            )
            .await
            .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn onboarded(&self) -> StoreFuture<'_, Vec<OnboardedKey>> {
        Box::pin(self.run("onboarded", async move |c| {
            let sql = format!("SELECT {CONNECTION_COLUMNS} FROM pleo_gateway_connections");
            // Row by row, as `installs`: every replica reads them all on each install.
            let no_params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
            let rows = c.query_raw(&sql, no_params).await.map_err(unavailable)?;
            let mut rows = std::pin::pin!(rows);
            let mut out = Vec::new();
            while let Some(row) = rows.try_next().await.map_err(unavailable)? {
                out.push(connection_from(&row));
            }
            Ok(out)
        }))
    }

    fn delete_onboarded<'a>(&'a self, tenant: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.run("onboarded", async move |c| {
            let n = c
                .execute("DELETE FROM pleo_gateway_connections WHERE tenant = $1", &[&tenant])
                .await
                .map_err(unavailable)?;
            Ok(n == 1)
        }))
    }

    fn put_install<'a>(&'a self, r: &'a InstallRecord) -> StoreFuture<'a, ()> {
        Box::pin(self.run("install", async move |c| {
            let record = serde_json::to_string(r).expect("plain strings and numbers serialize");
            // Written and announced in one statement: a replica that hears
            // of it reads it back.
            c.execute(
                "WITH w AS (INSERT INTO pleo_gateway_installs (tenant, app, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant) DO UPDATE SET app = EXCLUDED.app, record = EXCLUDED.record, updated_at = now() \
                 RETURNING tenant) SELECT pg_notify($4, tenant) FROM w",
                &[&&*r.tenant, &&*r.app, &record, &super::INSTALL_CHANNEL],
            )
            .await
            .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn installs<'a>(&'a self, held: &'a [Arc<InstallRecord>]) -> StoreFuture<'a, Vec<Arc<InstallRecord>>> {
        Box::pin(self.run("install", async move |c| {
            let mut held = crate::state::installs::Held::new(held);
            // Row by row as they arrive: at 100,000 installs the whole
            // result held at once was 27 MB beside the records made from it.
            let no_params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
            let rows = c.query_raw("SELECT record FROM pleo_gateway_installs", no_params).await.map_err(unavailable)?;
            let mut rows = std::pin::pin!(rows);
            let mut out = Vec::new();
            while let Some(row) = rows.try_next().await.map_err(unavailable)? {
                match serde_json::from_str(row.get::<_, &str>(0)) {
                    Ok(r) => out.push(held.keep(r)),
                    Err(e) => tracing::error!(error = %e, "an install in the store cannot be read; skipped"),
                }
            }
            out.shrink_to_fit();
            Ok(out)
        }))
    }

    fn install_changes(&self) -> Option<tokio::sync::broadcast::Receiver<()>> {
        Some(self.install_changes.subscribe())
    }
}
