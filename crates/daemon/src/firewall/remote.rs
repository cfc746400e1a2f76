//! The unprivileged part's firewall driver: every call is a request to the privileged
//! part ([`crate::privsep`]), which holds the real driver and checks the request
//! against its own config. Teardown is not in the request set: the unprivileged part
//! can never unprotect anything.

use std::sync::Arc;

use super::{FirewallDriver, FirewallError, Grant, Key, LiveGrant, Plan};
use crate::privsep::client::{Client, ClientError};
use crate::privsep::codec::{Answer, Op, WireGrant, WireKey};

/// Forwards to the privileged part.
pub struct RemoteDriver {
    client: Arc<Client>,
    name: &'static str,
    kernel_expiry: bool,
    /// The services this part's config protects (from the last plan set up). A grant
    /// for any other service changes nothing in the firewall (one process records it
    /// and adds a harmless set element); it is not sent, so the privileged part, which
    /// refuses it, is not asked.
    protected: Option<std::collections::HashSet<portcullis_proto::Service>>,
}

impl RemoteDriver {
    /// Forward over `client` to a driver called `name`.
    pub fn new(client: Arc<Client>, name: &'static str, kernel_expiry: bool) -> RemoteDriver {
        RemoteDriver { client, name, kernel_expiry, protected: None }
    }

    fn call(&self, op: Op, what: &'static str) -> Result<Answer, FirewallError> {
        self.client.call(op).map_err(|e| match e {
            ClientError::Failed(m) => FirewallError::Protocol(m),
            e => FirewallError::Kernel { op: what, source: std::io::Error::other(e.to_string()) },
        })
    }

    fn changes_something(&self, s: &portcullis_proto::Service) -> bool {
        self.protected.as_ref().is_none_or(|p| p.contains(s))
    }

    fn done(&self, op: Op, what: &'static str) -> Result<(), FirewallError> {
        match self.call(op, what)? {
            Answer::Done => Ok(()),
            a => Err(FirewallError::Protocol(format!("{what}: unexpected answer {a:?}"))),
        }
    }
}

impl FirewallDriver for RemoteDriver {
    fn name(&self) -> &'static str {
        self.name
    }

    fn setup(&mut self, plan: &Plan) -> Result<(), FirewallError> {
        // The privileged part installs the plan of the config it loaded itself.
        self.done(Op::Setup, "setup")?;
        self.protected = Some(plan.protected.iter().copied().collect());
        Ok(())
    }

    fn adopt(&mut self, plan: &Plan) {
        self.protected = Some(plan.protected.iter().copied().collect());
    }

    fn grant(&mut self, grants: &[Grant]) -> Result<(), FirewallError> {
        let grants: Vec<Grant> =
            grants.iter().filter(|g| self.changes_something(&g.service)).copied().collect();
        for chunk in grants.chunks(crate::privsep::codec::MAX_ITEMS) {
            self.done(Op::Grant { grants: chunk.iter().map(WireGrant::from).collect() }, "grant")?;
        }
        Ok(())
    }

    fn revoke(&mut self, grants: &[Key]) -> Result<(), FirewallError> {
        let grants: Vec<Key> = grants.iter().filter(|(_, s)| self.changes_something(s)).copied().collect();
        for chunk in grants.chunks(crate::privsep::codec::MAX_ITEMS) {
            let keys = chunk.iter().map(|&(p, s)| WireKey::new(p, s)).collect();
            self.done(Op::Revoke { keys }, "revoke")?;
        }
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<LiveGrant>, FirewallError> {
        let mut out = Vec::new();
        loop {
            let offset = u32::try_from(out.len()).unwrap_or(u32::MAX);
            match self.call(Op::List { offset }, "list")? {
                Answer::Grants { grants, more } => {
                    let n = grants.len();
                    out.extend(grants.into_iter().filter_map(|g| g.live()));
                    if !more || n == 0 {
                        return Ok(out);
                    }
                }
                a => return Err(FirewallError::Protocol(format!("list: unexpected answer {a:?}"))),
            }
        }
    }

    fn teardown(&mut self) -> Result<(), FirewallError> {
        Err(FirewallError::Protocol("teardown is not available to the unprivileged part".into()))
    }

    fn kernel_expiry(&self) -> bool {
        self.kernel_expiry
    }
}
