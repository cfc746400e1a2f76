//! What a door does besides opening the firewall, kept out of `engine.rs` so the
//! packet path there stays readable: its start/stop commands, handed to the command
//! runner ([`crate::actions`]), and its one-time sequences, consumed and the next one
//! armed ([`crate::actions::onetime`]). Grants and their expiry belong to
//! [`crate::grants`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use portcullis_proto::knock::Tracker;
use portcullis_proto::Service;

use super::Engine;
use crate::actions::{onetime, ActionsHandle, Queued};
use crate::config::Door;
use crate::privsep::client::Client;

/// Engine state for door commands.
#[derive(Debug, Default)]
pub(super) struct Ext {
    actions: Option<ActionsHandle>,
    /// When split, one-time files are written by the privileged part.
    privileged: Option<Arc<Client>>,
}

/// The sequence to give the tracker for `d`: a disabled one-time door (file used up)
/// gets a placeholder that [`disable_exhausted`] removes right after construction.
pub(super) fn tracker_sequence(d: &Door) -> Vec<Service> {
    if d.sequence.is_empty() {
        vec![Service::tcp(1)]
    } else {
        d.sequence.clone()
    }
}

/// Disable the doors of `tracker` (config indexes `doors`) whose one-time file is used up.
pub(super) fn disable_exhausted(tracker: &mut Tracker, doors: &[usize], config: &[Door]) {
    for (ti, &ci) in doors.iter().enumerate() {
        if config[ci].sequence.is_empty() {
            let _ = tracker.set_sequence(ti, None);
        }
    }
}

impl Ext {
    /// The command runner, if one was started.
    pub(super) fn actions(&self) -> Option<&ActionsHandle> {
        self.actions.as_ref()
    }
}

impl Engine {
    /// Hand start/stop commands to this command driver (without one, doors with
    /// commands only log that they would run them).
    pub fn set_actions(&mut self, actions: ActionsHandle) {
        self.ext.actions = Some(actions);
    }

    /// Run door commands and write one-time sequence files through the privileged part.
    pub fn set_privileged(&mut self, client: Arc<Client>) {
        self.ext.actions = Some(ActionsHandle::privileged(Arc::clone(&client)));
        self.ext.privileged = Some(client);
    }

    /// After a completed sequence: run the door's commands and arm its next one-time
    /// sequence. `log` says whether the grant lines are within the log budget.
    pub(super) fn after_open(&mut self, src: IpAddr, door: usize, wall: SystemTime, log: bool) {
        let d = &self.doors[door];
        let name = d.name.clone();
        if let Some(cmds) = &d.commands {
            match self.ext.actions.as_ref().map(|a| a.open(&name, src, cmds, wall)) {
                Some(Queued::Yes) => {
                    if d.open.is_empty() {
                        self.stats.opened += 1;
                    }
                    if log {
                        tracing::info!(
                            "{src}: {name}: running start command; stop command in {}s",
                            cmds.cmd_timeout.as_secs()
                        );
                    }
                }
                Some(Queued::Nothing) => {
                    if log {
                        tracing::info!("{src}: {name}: no start command for this address family");
                    }
                }
                Some(Queued::Full) => {
                    self.stats.grant_failures += 1;
                    tracing::error!("{src}: {name}: command queue full (flood?); start command NOT run");
                }
                None => tracing::warn!("{src}: {name}: commands are not enabled in this mode; nothing run"),
            }
        }
        let Some(ot) = self.doors[door].one_time.clone() else { return };
        let Some((gi, ti)) = self
            .groups
            .iter()
            .enumerate()
            .find_map(|(gi, g)| g.doors.iter().position(|&c| c == door).map(|ti| (gi, ti)))
        else {
            return;
        };
        let used = self.groups[gi].tracker.doors()[ti].sequence.clone();
        let consumed = match &self.ext.privileged {
            Some(c) => c.one_time_used(&name, &used),
            None => onetime::consume(&ot.path, &used),
        };
        let next = match consumed {
            Ok(next) => next,
            Err(e) => {
                // Fail closed: a sequence that could not be marked used must not be replayable.
                tracing::error!("{name}: one-time sequences: {e}; door disabled");
                None
            }
        };
        let armed = next.is_some();
        if let Err(e) = self.groups[gi].tracker.set_sequence(ti, next) {
            tracing::error!("{name}: next one-time sequence refused: {e:?}; door disabled");
            let _ = self.groups[gi].tracker.set_sequence(ti, None);
        } else if armed {
            tracing::info!("{name}: one-time sequence used; next sequence from {} armed", ot.path.display());
        } else {
            tracing::warn!("{name}: one-time sequences in {} used up; door disabled", ot.path.display());
        }
    }
}
