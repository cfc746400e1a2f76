//! The outcome of asking for commands to run, shared by the in-process command driver
//! and the privileged-part client.

/// What [`super::ActionsHandle::open`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Accepted; the scheduler will run it.
    Yes,
    /// The request queue is full (a flood): dropped and logged.
    Full,
    /// Nothing to run for this address family.
    Nothing,
}
