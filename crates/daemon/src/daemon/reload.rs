//! SIGHUP: read the config again and switch to it without dropping what is live.
//!
//! The new config is loaded and validated here, on the reload thread; the capture loop
//! only takes a ready-made [`Update`] between two batches ([`Engine::take_over`] keeps
//! the knock attempts of door groups whose definition did not change). Grants live in
//! the firewall and the store, which a reload does not touch. A config that cannot be
//! read, is invalid, or changes something only a restart can change is refused: the
//! reason is logged at error and the running config stays.
//!
//! In the unprivileged part of a split daemon the files are not read here (they are
//! root's): the privileged part reads and checks them on its SIGHUP and offers the text
//! it checked; this thread takes the offer, builds the same update, and answers whether
//! it switched (see `docs/privsep.md`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::engine::Engine;
use super::service::Service;
use crate::api::{ApiServer, Bound, Tokens};
use crate::config::Config;
use crate::grants::Granter;
use crate::privsep::client::Client;
use crate::spa::SpaGate;

/// Reads the config file again, in two halves: its text (bounded, permission-checked)
/// and that text parsed with the command line's overrides applied. A split daemon's
/// privileged part reads; its unprivileged part only parses the text it is handed.
pub struct Loader {
    /// Read the config file's text.
    pub read: Box<dyn Fn() -> Result<String, String> + Send>,
    /// Parse a config text (overrides applied).
    pub parse: Box<Parse>,
}

/// Parses a config text, with the command line's overrides applied.
pub type Parse = dyn Fn(&str) -> Result<Config, String> + Send;

impl Loader {
    /// Read and parse.
    pub fn load(&self) -> Result<(String, Config), String> {
        let text = (self.read)()?;
        let config = (self.parse)(&text)?;
        Ok((text, config))
    }

    /// For a daemon started without a config file: every reload is refused.
    pub fn none() -> Loader {
        let no = || "this daemon was started without a config file to reload".to_string();
        Loader { read: Box::new(move || Err(no())), parse: Box::new(move |_| Err(no())) }
    }
}

/// What wakes the reload thread.
pub enum Trigger {
    /// SIGHUP (one process).
    Signals(signal_hook::iterator::Signals),
    /// Config generations the privileged part offers (the unprivileged part).
    Offers(Receiver<u64>),
}

/// Where a reload's config comes from.
pub enum Source {
    /// The files (one process).
    Files(Loader),
    /// The privileged part's offer; the API keeps the sockets bound at start (`spare`
    /// holds duplicates of them: the unprivileged part cannot bind).
    Privileged {
        /// The connection.
        client: Arc<Client>,
        /// Only its `parse` half is used.
        loader: Loader,
        /// The API's listeners, duplicated before they were served.
        spare: Option<Bound>,
    },
}

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
    if old.fleet != new.fleet {
        return Some("[fleet] changed (the fleet connection is made at start)".into());
    }
    let fleet_spa = |c: &Config| {
        c.spa.as_ref().is_some_and(|s| s.users.values().any(|u| u.fleet) || s.stanzas.iter().any(|s| s.fleet))
    };
    if fleet_spa(new) && !fleet_spa(old) {
        return Some("fleet-scoped SPA appears and the fleet replay check is not running".into());
    }
    None
}

/// Why a split daemon cannot take `new` without a restart, beyond [`restart_needed`]:
/// its unprivileged part serves the API on the sockets bound at start.
pub fn split_restart_needed(old: &Config, new: &Config) -> Option<String> {
    let bind = |c: &Config| c.api.as_ref().map(|a| (a.socket.clone(), a.listen));
    (bind(old) != bind(new)).then(|| {
        "the API's socket or listen address changed (the unprivileged part serves the sockets bound \
         at start)"
            .to_string()
    })
}

/// The running config and API, owned by the reload thread.
pub struct Reloader {
    pub(super) config: Config,
    pub(super) api: Option<ApiServer>,
    pub(super) granter: Arc<Granter>,
    pub(super) source: Source,
    pub(super) updates: Sender<Update>,
    pub(super) service: Service,
}

/// The reload thread, running.
pub struct Running {
    stop: Arc<AtomicBool>,
    signals: Option<signal_hook::iterator::Handle>,
    thread: std::thread::JoinHandle<Reloader>,
}

impl Running {
    /// Stop the thread, then the API it owns.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = &self.signals {
            h.close();
        }
        if let Ok(mut r) = self.thread.join() {
            r.stop();
        }
    }
}

impl Reloader {
    /// Run on a thread of its own, woken by `trigger`.
    pub fn spawn(self, trigger: Trigger) -> anyhow::Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, mut r) = (Arc::clone(&stop), self);
        let (signals, thread) = match trigger {
            Trigger::Signals(mut hup) => {
                let handle = hup.handle();
                let t = std::thread::Builder::new().name("reload".into()).spawn(move || {
                    for _ in hup.forever() {
                        r.on_hup(None);
                    }
                    r
                });
                (Some(handle), t)
            }
            Trigger::Offers(rx) => {
                let t = std::thread::Builder::new().name("reload".into()).spawn(move || {
                    while !flag.load(Ordering::SeqCst) {
                        if let Ok(generation) = rx.recv_timeout(Duration::from_millis(200)) {
                            r.on_hup(Some(generation));
                        }
                    }
                    r
                });
                (None, t)
            }
        };
        Ok(Running { stop, signals, thread: thread.context("starting the reload thread")? })
    }

    /// Handle one SIGHUP (or, split, the privileged part's offer of `generation`):
    /// reopen log files, then try the new config.
    pub fn on_hup(&mut self, generation: Option<u64>) {
        self.service.reloading();
        crate::log::reopen();
        let r = self.prepare(generation);
        let accepted = r.is_ok();
        match r {
            Ok(u) => {
                // The capture loop says READY=1 once it has switched.
                if self.updates.send(u).is_err() {
                    tracing::error!("reload: the capture loop is gone");
                }
            }
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e:#}");
                self.service.ready("reload refused (see the log); running the previous configuration");
            }
        }
        if let (Some(generation), Source::Privileged { client, .. }) = (generation, &self.source) {
            let op = crate::privsep::codec::Op::Reloaded { generation, accepted };
            if let Err(e) = client.call(op) {
                tracing::error!("reload: could not tell the privileged part: {e}");
            }
        }
    }

    /// The new config, and the tokens that came with it (split).
    fn fetch(&self, generation: Option<u64>) -> anyhow::Result<(Config, Option<Tokens>)> {
        match (&self.source, generation) {
            (Source::Files(loader), _) => Ok((loader.load().map_err(|e| anyhow::anyhow!("{e}"))?.1, None)),
            (Source::Privileged { client, loader, .. }, Some(generation)) => {
                let b = client.bundle(generation).map_err(|e| anyhow::anyhow!("{e}"))?;
                // The files it names come from the bundle, never from disk (they are root's).
                let config = crate::config::files::serving(b.files, || (loader.parse)(&b.text))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let tokens =
                    match (&config.api, b.tokens) {
                        (Some(a), Some(t)) => Some(Tokens::parse(&t).map_err(|e| {
                            anyhow::anyhow!("api tokens_file {}: {e}", a.tokens_file.display())
                        })?),
                        (Some(_), None) => anyhow::bail!("the privileged part sent no API tokens"),
                        (None, _) => None,
                    };
                Ok((config, tokens))
            }
            (Source::Privileged { .. }, None) => {
                anyhow::bail!("the privileged part reads the config: send SIGHUP to it (the main process)")
            }
        }
    }

    fn prepare(&mut self, generation: Option<u64>) -> anyhow::Result<Update> {
        let (new, tokens) = self.fetch(generation)?;
        if let Some(why) = restart_needed(&self.config, &new) {
            anyhow::bail!("{}: {why}; restart the daemon to apply it", new.path.display());
        }
        // Everything that can fail comes before anything changes.
        if let Source::Privileged { .. } = self.source {
            if let Some(why) = split_restart_needed(&self.config, &new) {
                anyhow::bail!("{}: {why}; restart the daemon to apply it", new.path.display());
            }
        } else if let Some(a) = &new.api {
            Tokens::load(&a.tokens_file).map_err(|e| anyhow::anyhow!("api tokens_file: {e}"))?;
        }
        let plan = super::plan_for(&new);
        let mut engine = Engine::with_granter(&new, Arc::clone(&self.granter))?;
        if let Some(f) = crate::fleet::node::current() {
            engine = engine.with_fleet(Arc::clone(f));
        }
        let spa = match (&self.config.spa, &new.spa) {
            (_, None) => SpaUpdate::Off,
            (Some(_), Some(s)) => SpaUpdate::Reconfigure(Box::new(s.clone())),
            (None, Some(s)) => {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let cache = super::open_replay(&new, s, now)?;
                SpaUpdate::Fresh(Box::new(SpaGate::new(s, plan.protected.clone(), cache)))
            }
        };
        if let Source::Privileged { spare, .. } = &self.source {
            // Same sockets (checked above): serve them anew with the new tokens, then
            // stop the previous server without removing the socket file.
            if let (Some(cfg), Some(spare), Some(tokens)) = (&new.api, spare, tokens) {
                let bound = spare.try_clone().context("api: duplicating the listeners")?.with_tokens(tokens);
                let next = crate::api::serve(bound, cfg, Arc::clone(&self.granter))
                    .context("the API could not start with the new config")?;
                if let Some(mut old) = self.api.replace(next) {
                    old.keep_socket_file();
                    old.stop();
                }
            }
        } else if self.config.api.is_some() || new.api.is_some() {
            // The tokens file may have changed under an unchanged config: always restart the API.
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
        Ok(Update { engine, spa, config: Box::new(new), summary })
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
        let api = |s: &str| conf(&format!("{BASE}[api]\nsocket = \"{s}\"\ntokens_file = \"t\"\n"));
        assert_eq!(split_restart_needed(&api("/run/a.sock"), &api("/run/a.sock")), None);
        assert!(split_restart_needed(&api("/run/a.sock"), &api("/run/b.sock")).is_some());
        assert!(split_restart_needed(&old, &api("/run/a.sock")).is_some());
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
        let fleet = "[fleet]\ndatabase_url_file = \"u\"\nnode = \"gw1\"\n";
        let scoped = conf(&format!("{fleet}{BASE}scope = \"fleet\"\n"));
        assert_eq!(
            restart_needed(&old, &scoped).unwrap(),
            "[fleet] changed (the fleet connection is made at start)"
        );
        assert_eq!(restart_needed(&scoped, &conf(&format!("{fleet}{BASE}"))), None, "door scope: reloadable");
    }
}
