//! SIGHUP in a split daemon. systemd signals the main process, the privileged part: it
//! reads the config file and the API tokens file itself, checks them as a reload in one
//! process does, and offers exactly the text it checked to the unprivileged part (which
//! cannot read root's files), never the other way round. The files that parse read (key
//! files, `access.conf` and its includes, rotating secrets: see [`crate::config::files`])
//! go with the text, as read after their checks here. The unprivileged part sees the
//! offer in its next status poll, builds its new engine from that text and answers
//! whether it switched; only then does the privileged part's policy become the new
//! config's (in between it allows what either config allows). A config refused by
//! either part leaves both on the running one.

use anyhow::Context;

use super::codec::Bundle;
use super::server::Server;
use crate::config::Config;
use crate::daemon::reload::{restart_needed, split_restart_needed, Loader};
use crate::daemon::service::Service;

/// The config the privileged part runs, and how to read the next one.
pub struct Reload {
    config: Config,
    loader: Loader,
    service: Service,
}

impl Reload {
    /// Start from `config`, read again with `loader`.
    pub fn new(config: Config, loader: Loader) -> Reload {
        let service = Service::from_env(&config.daemon.state_dir);
        Reload { config, loader, service }
    }

    /// Handle one SIGHUP: reopen log files, read and check the config, offer it.
    pub fn on_hup(&mut self, server: &mut Server) {
        // The unprivileged part says READY=1 once it has switched (or refused).
        self.service.reloading();
        crate::log::reopen();
        match self.prepare() {
            Ok((new, bundle)) => {
                let g = server.offer(new, bundle);
                tracing::info!(
                    "reload: config read and checked; offered to the unprivileged part as generation {g}"
                );
            }
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e:#}");
                self.service.ready("reload refused (see the log); running the previous configuration");
            }
        }
    }

    /// The unprivileged part runs `config` now.
    pub fn settled(&mut self, config: Box<Config>) {
        self.config = *config;
    }

    fn prepare(&self) -> anyhow::Result<(Config, String)> {
        // Every file the parse reads (after its checks) goes with the text: the
        // unprivileged part parses from these alone.
        let (loaded, files) = crate::config::files::recording(|| self.loader.load());
        let (text, new) = loaded.map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = new.path.display().to_string();
        if let Some(why) =
            restart_needed(&self.config, &new).or_else(|| split_restart_needed(&self.config, &new))
        {
            anyhow::bail!("{path}: {why}; restart the daemon to apply it");
        }
        if let Some(what) = super::unsplit::reason(&new) {
            anyhow::bail!("{path}: {what} needs the daemon unsplit; restart it to apply the config");
        }
        let tokens = match &new.api {
            Some(a) => {
                let t = crate::fsperm::read_secret(&a.tokens_file, 1 << 20)
                    .map_err(|e| anyhow::anyhow!("api tokens_file: {e}"))?;
                crate::api::Tokens::parse(&t)
                    .map_err(|e| anyhow::anyhow!("api tokens_file {}: {e}", a.tokens_file.display()))?;
                Some(t)
            }
            None => None,
        };
        let bundle =
            serde_json::to_string(&Bundle { text, tokens, files }).context("encoding the config bundle")?;
        if bundle.len() > super::codec::MAX_BUNDLE {
            anyhow::bail!(
                "{path}: the config, tokens and files it names are too large to hand over (over {} bytes)",
                super::codec::MAX_BUNDLE
            );
        }
        Ok((new, bundle))
    }
}
