//! `pleo-gateway link`: make, list or revoke connect links.

use std::io::Write;

use super::CommandError;
use crate::config::Config;

/// What `pleo-gateway link` does.
#[derive(Debug)]
pub enum LinkAction {
    Create { tenant: String, expires: Option<std::time::Duration> },
    List { tenant: Option<String> },
    Revoke { id: String },
}

impl LinkAction {
    /// `link TENANT [--expires]`, `link --list [TENANT]` or `link --revoke ID`.
    pub fn from_args(
        tenant: Option<String>,
        expires: Option<std::time::Duration>,
        list: bool,
        revoke: Option<String>,
    ) -> Result<LinkAction, CommandError> {
        match (tenant, list, revoke) {
            (tenant, true, None) => Ok(LinkAction::List { tenant }),
            (None, false, Some(id)) => Ok(LinkAction::Revoke { id }),
            (Some(tenant), false, None) => Ok(LinkAction::Create { tenant, expires }),
            _ => Err(CommandError::Usage(
                "usage: pleo-gateway link TENANT [--expires 7d] | link --list [TENANT] | link --revoke ID".into(),
            )),
        }
    }
}

/// `pleo-gateway link`: makes, lists or revokes connect links in the
/// configured store (a running gateway sees them at once).
pub async fn link(config: &Config, action: LinkAction, out: &mut impl Write) -> Result<(), CommandError> {
    use crate::onboarding::{self, Actor};
    let store = crate::state::open_for_command(config).map_err(CommandError::Unavailable)?;
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| format!("uid{uid}"), |u| u.name);
    let by = Actor::Cli(format!(
        "{user}@{}",
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let failed = |e: crate::state::StoreError| CommandError::Unavailable(e.to_string());
    match action {
        LinkAction::Create { tenant, expires } => {
            if !config.tenants.contains_key(&tenant) {
                return Err(CommandError::Usage(format!("no tenant `{tenant}` in {}", config.source.display())));
            }
            let Some(connect) = &config.connect else {
                return Err(CommandError::Usage(
                    "no `connect` in the config: configure connect.listen and connect.public_url first".into(),
                ));
            };
            let ttl = expires.unwrap_or(connect.link_ttl);
            if ttl < std::time::Duration::from_secs(60) || ttl > onboarding::MAX_LINK_TTL {
                return Err(CommandError::Usage("--expires must be from 1m to 90d".into()));
            }
            let (link, url) =
                onboarding::create_link(&*store, Some(&connect.public_url), &tenant, ttl, &by).await.map_err(failed)?;
            let expires = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(link.expires_at_ms),
            );
            let _ = writeln!(
                out,
                "Connect link for tenant `{tenant}` (id {}, expires {expires}, works once):\n\n  {}\n\n\
                 Send it to the customer's Pleo admin. It is shown only now: the gateway keeps only its hash.",
                link.id,
                url.unwrap_or_default()
            );
        }
        LinkAction::List { tenant } => {
            let now = crate::state::unix_now_ms();
            let mut rows =
                vec![["ID".to_string(), "TENANT".into(), "STATE".into(), "EXPIRES".into(), "CREATED BY".into()]];
            for l in store.links().await.map_err(failed)? {
                if tenant.as_ref().is_some_and(|t| *t != l.tenant) {
                    continue;
                }
                let state = l.state(now).as_str().to_string();
                let expires = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(l.expires_at_ms),
                );
                rows.push([l.id, l.tenant, state, expires.to_string(), l.created_by]);
            }
            let _ = write!(out, "{}", crate::config::table(&rows));
        }
        LinkAction::Revoke { id } => match store.revoke(&id, crate::state::unix_now_ms()).await.map_err(failed)? {
            Some(l) => {
                onboarding::audit("link_revoked", &l.tenant, &by, "ok");
                let now = crate::state::unix_now_ms();
                let _ = writeln!(out, "link {id} for tenant `{}` is {}", l.tenant, l.state(now).as_str());
            }
            None => return Err(CommandError::Usage(format!("no connect link `{id}`"))),
        },
    }
    Ok(())
}
