//! `portcullisd run`: take the state dir, open what needs privileges, then either split
//! into the privileged and unprivileged parts ([`crate::privsep`], the default as root)
//! or serve in one process ([`crate::daemon::serve`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::daemon;

/// Run until `shutdown` becomes true. Installs the firewall table first; leaves it in
/// place on exit (fail closed: ports stay protected and grants expire in the kernel).
/// As root (unless `privsep` is false) the daemon splits in two, see [`crate::privsep`].
pub fn run(
    config: &Config,
    shutdown: Arc<AtomicBool>,
    privsep: bool,
    loader: Option<daemon::reload::Loader>,
) -> anyhow::Result<()> {
    // Claimed before anything else: SIGHUP's default action would kill us mid-start.
    let hup = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("installing the SIGHUP handler")?;
    let loader = loader.unwrap_or_else(daemon::reload::Loader::none);
    let root = nix::unistd::geteuid().is_root();
    let missing = crate::privsep::sys::missing_for_split();
    let unsupported = crate::privsep::unsplit::reason(config);
    let split = privsep && root && missing.is_empty() && unsupported.is_none();
    // Taken before anything else and held by this process (the privileged part when
    // split) for its whole life: a second daemon on the same state dir refuses to start.
    // The unprivileged part will own the store's files, so the directory may be its.
    let unprivileged =
        if split { crate::privsep::sys::account().ok().map(|(a, _)| a.uid.as_raw()) } else { None };
    let _state = crate::statedir::StateDir::open(
        &config.daemon.state_dir,
        config.daemon.pid_file.as_deref(),
        unprivileged,
    )?;
    let opened = daemon::open(config)?;
    if !privsep {
        tracing::info!("privsep: turned off (--no-privsep): one process with the privileges given");
    } else if let (true, Some(what)) = (root, unsupported) {
        tracing::warn!(
            "privsep: NOT SPLIT: the config uses {what}, which needs one process (see docs/privsep.md)"
        );
    } else if root && !missing.is_empty() {
        let m = missing.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ");
        tracing::warn!(
            "privsep: NOT SPLIT: started without {m} (see docs/privsep.md for the unit settings); \
             running as one process with the privileges given"
        );
    } else if !root {
        tracing::info!("privsep: not started as root; running as one process with the privileges given");
    }
    let mut driver = daemon::driver_for(config)?;
    if config.daemon.flush_at_start {
        // fwknopd FLUSH_IPT_AT_INIT: start with no grant. Install (or keep) the gate
        // first and then revoke, so there is never a moment without it.
        driver.setup(&daemon::plan_for(config)).context("installing the firewall at start")?;
        let live: Vec<_> =
            driver.list().context("listing grants to flush")?.into_iter().map(|g| g.key()).collect();
        driver.revoke(&live).context("flushing grants at start")?;
    }
    if split {
        tracing::info!("privsep: splitting into a privileged and an unprivileged part");
        if let Some(spa) = &config.spa {
            // Created (and fwknopd's root-only digest cache imported into it) while root;
            // the unprivileged part gets the file with the rest of the state dir.
            daemon::open_replay(config, spa, daemon::unix_now())?;
        }
        return crate::privsep::run(config, shutdown, opened, driver, (hup, loader));
    }
    daemon::serve(config, &shutdown, opened, driver, None, Some((Some(hup), loader)))
}
