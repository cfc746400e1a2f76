//! The SPA gate's fleet side: for fleet-scoped users, the fleet replay claim after the
//! local one, and `on_db_down` when the database does not answer in time.

use super::config::OnDbDown;
use super::replay::{Claim, FleetReplay};

/// What the gate does with a fleet-scoped request after the fleet claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Grant, and share the grant with the fleet.
    Share,
    /// Grant on this node only (database down, `on_db_down = "local"`).
    LocalOnly,
    /// Refuse: accepted elsewhere already.
    Replayed,
    /// Refuse: database down, `on_db_down = "refuse"`.
    Unavailable,
}

/// The fleet replay worker and the policy for when it cannot answer.
pub struct FleetGate {
    replay: FleetReplay,
    on_db_down: OnDbDown,
    share: bool,
}

impl FleetGate {
    /// A gate side over `replay`.
    pub fn new(replay: FleetReplay, on_db_down: OnDbDown) -> FleetGate {
        FleetGate { replay, on_db_down, share: false }
    }

    /// Claim `digest` fleet-wide until `expires` (unix seconds).
    pub fn admit(&mut self, digest: [u8; 32], expires: u64) -> Outcome {
        let o = decide(self.replay.claim(digest, expires), self.on_db_down);
        if o == Outcome::LocalOnly {
            tracing::error!(
                "spa: FLEET DATABASE UNAVAILABLE: accepting a fleet-scoped request with this node's \
                 replay cache only (on_db_down = \"local\"); it could be replayed to another node"
            );
        }
        self.share = o == Outcome::Share;
        o
    }

    /// Whether the last grant decided is to be shared (and forget it).
    pub fn take_share(&mut self) -> bool {
        std::mem::take(&mut self.share)
    }
}

/// The policy, apart from I/O.
pub fn decide(claim: Claim, on_db_down: OnDbDown) -> Outcome {
    match (claim, on_db_down) {
        (Claim::First, _) => Outcome::Share,
        (Claim::Replayed, _) => Outcome::Replayed,
        (Claim::Down, OnDbDown::Refuse) => Outcome::Unavailable,
        (Claim::Down, OnDbDown::Local) => Outcome::LocalOnly,
    }
}
