//! SIGHUP: read the config again and switch to it without dropping what is live.
//!
//! The new config is loaded and validated here, on the reload thread; the capture loop
//! only takes a ready-made [`Update`] between two batches ([`Engine::take_over`] keeps
//! the knock attempts of door groups whose definition did not change). Grants live in
//! the firewall and the store, which a reload does not touch. A config that cannot be
//! read, is invalid, or changes something only a restart can change is refused: the
//! reason is logged at error and the running config stays.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::SystemTime;

use super::engine::Engine;
use super::service::Service;
use crate::api::{ApiServer, Tokens};
use crate::config::Config;
use crate::grants::Granter;
use crate::spa::SpaGate;

/// Reads the config file again (with the command line's overrides applied).
pub type Loader = Box<dyn Fn() -> Result<Config, String> + Send>;

/// What the capture loop switches to.
pub struct Update {
    /// The engine for the new config (its SPA gate still to be settled by [`SpaUpdate`]).
    pub engine: Engine,
    /// The running SPA gate's fate.
    pub spa: SpaUpdate,
    /// The new config (the capture filter follows its doors and SPA ports).
    pub config: Box<Config>,
    /// For the log line and the service status.
    pub summary: String,
}

/// SPA across a reload: the replay cache must carry over (it is what refuses replays).
pub enum SpaUpdate {
    /// No SPA in the new config.
    Off,
    /// Reconfigure the running gate (keeps its replay cache and budgets).
    Reconfigure(Box<crate::config::spa::SpaConfig>),
    /// SPA is new: a gate with its replay cache freshly opened.
    Fresh(Box<SpaGate>),
}

/// Why `new` cannot replace `old` without a restart, if it cannot.
pub fn restart_needed(old: &Config, new: &Config) -> Option<String> {
    if old.daemon != new.daemon {
        return Some("[daemon] settings changed (backend, state_dir, interfaces, logging, limits)".into());
    }
    if old.store != new.store {
        return Some("[store] settings changed (the store is opened at start)".into());
    }
    if old.protected() != new.protected() {
        return Some("the set of protected services changed (the firewall table is built for it)".into());
    }
    if old.limits.grant_prefix.lens() != new.limits.grant_prefix.lens() {
        return Some(
            "the prefix lengths doors and users grant changed (the firewall has a set for each)".into(),
        );
    }
    let commands = |c: &Config| {
        c.doors.iter().any(|d| d.commands.is_some())
            || c.spa.as_ref().is_some_and(|s| s.stanzas.iter().any(|st| st.cmd_cycle.is_some()))
    };
    if commands(new) && !commands(old) {
        return Some("door commands appear and the command runner is not running".into());
    }
    let udp = |c: &Config| c.spa.as_ref().and_then(|s| s.udp_server);
    if udp(old) != udp(new) {
        return Some("the SPA UDP server port changed (its socket is opened at start)".into());
    }
    None
}

/// The running config and API, owned by the reload thread.
pub struct Reloader {
    pub(super) config: Config,
    pub(super) api: Option<ApiServer>,
    pub(super) granter: Arc<Granter>,
    pub(super) loader: Loader,
    pub(super) updates: Sender<Update>,
    pub(super) service: Service,
}

impl Reloader {
    /// Handle one SIGHUP: reopen log files, then try the new config.
    pub fn on_hup(&mut self) {
        self.service.reloading();
        crate::log::reopen();
        match self.prepare() {
            Ok(Some(u)) => {
                // The capture loop says READY=1 once it has switched.
                if self.updates.send(u).is_err() {
                    tracing::error!("reload: the capture loop is gone");
                }
            }
            Ok(None) => self.service.ready("configuration unchanged"),
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e:#}");
                self.service.ready("reload refused (see the log); running the previous configuration");
            }
        }
    }

    fn prepare(&mut self) -> anyhow::Result<Option<Update>> {
        let new = (self.loader)().map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(why) = restart_needed(&self.config, &new) {
            anyhow::bail!("{}: {why}; restart the daemon to apply it", new.path.display());
        }
        // Everything that can fail comes before anything changes.
        if let Some(a) = &new.api {
            Tokens::load(&a.tokens_file).map_err(|e| anyhow::anyhow!("api tokens_file: {e}"))?;
        }
        let plan = super::plan_for(&new);
        let engine = Engine::with_granter(&new, Arc::clone(&self.granter))?;
        let spa = match (&self.config.spa, &new.spa) {
            (_, None) => SpaUpdate::Off,
            (Some(_), Some(s)) => SpaUpdate::Reconfigure(Box::new(s.clone())),
            (None, Some(s)) => {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let cache = super::open_replay(&new, s, now)?;
                SpaUpdate::Fresh(Box::new(SpaGate::new(s, plan.protected.clone(), cache)))
            }
        };
        // The tokens file may have changed under an unchanged config: always restart the API.
        if self.config.api.is_some() || new.api.is_some() {
            if let Some(a) = self.api.as_mut() {
                a.stop();
            }
            self.api = None;
            if let Some(cfg) = &new.api {
                match crate::api::start(cfg, Arc::clone(&self.granter)) {
                    Ok(a) => self.api = Some(a),
                    Err(e) => {
                        tracing::error!(
                            "reload: the new API did not start ({e:#}); restarting the previous one"
                        );
                        if let Some(old) = &self.config.api {
                            self.api = crate::api::start(old, Arc::clone(&self.granter))
                                .map_err(|e| {
                                    tracing::error!("api: the previous API did not start either: {e:#}")
                                })
                                .ok();
                        }
                        anyhow::bail!("the API could not start with the new config");
                    }
                }
            }
        }
        let summary = format!(
            "{} door(s), SPA {}, API {}",
            new.doors.len(),
            if new.spa.is_some() { "on" } else { "off" },
            if new.api.is_some() { "on" } else { "off" }
        );
        self.config = new.clone();
        Ok(Some(Update { engine, spa, config: Box::new(new), summary }))
    }

    /// Stop the API (daemon shutdown).
    pub fn stop(&mut self) {
        if let Some(a) = self.api.as_mut() {
            a.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Config {
        crate::config::parse(text, std::path::Path::new("t.toml")).unwrap()
    }

    const BASE: &str = "[[door]]\nname = \"ssh\"\nsequence = [7000, 8000]\nopen = [\"tcp/22\"]\n";

    #[test]
    fn what_a_reload_can_and_cannot_change() {
        let old = conf(BASE);
        assert_eq!(restart_needed(&old, &conf(&BASE.replace("8000", "8001"))), None);
        assert_eq!(
            restart_needed(&old, &conf(&BASE.replace("tcp/22", "tcp/2222"))).unwrap(),
            "the set of protected services changed (the firewall table is built for it)"
        );
        let daemon = format!("[daemon]\nnever_gate = [\"192.0.2.0/24\"]\n{BASE}");
        assert!(restart_needed(&old, &conf(&daemon)).unwrap().starts_with("[daemon] settings changed"));
        let cgnat = conf(&format!("{BASE}grant_prefix_v4 = 24\n"));
        assert!(restart_needed(&old, &cgnat).unwrap().starts_with("the prefix lengths"));
        // The same lengths on another door need no new set.
        let other = format!("{BASE}[[door]]\nname = \"b\"\nsequence = [1, 2, 3]\nopen = [\"tcp/22\"]\n");
        let moved = format!("{}grant_prefix_v4 = 24\n", other);
        assert_eq!(restart_needed(&cgnat, &conf(&moved)), None);
        let cmd = format!("{BASE}start_command = \"true\"\n");
        assert_eq!(
            restart_needed(&old, &conf(&cmd)).unwrap(),
            "door commands appear and the command runner is not running"
        );
    }
}
