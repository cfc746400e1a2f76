//! The privileged part's request handler: decode, check the sequence number, check
//! against the [`Policy`] of its own config, then act. Never panics on input; every
//! refusal is logged (rate-limited, with a running count so a flood stays visible).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use portcullis_proto::ratelimit::TokenBucket;
use portcullis_proto::Millis;

use super::codec::{self, Answer, Op, Reply, WireLive, WireQueued, WireService, MAX_CHUNK, MAX_ITEMS};
use super::firewall::Firewall;
use super::policy::{Policy, Refusal, Sequence};
use crate::actions::{onetime, ActionsHandle, Queued};
use crate::config::Config;
use crate::firewall::{FirewallDriver, Plan};

/// Refusal log lines per second, and their burst.
const LOG_PER_SEC: u32 = 10;
const LOG_BURST: u32 = 50;

/// The privileged part's state.
pub struct Server {
    firewall: Arc<Firewall>,
    /// What requests are checked against: `base`, or while a reload is being taken up,
    /// what either `base` or the offered config allows.
    policy: Policy,
    base: Policy,
    /// The config generation offered last (0: the start config) and its bundle.
    generation: u64,
    bundle: Option<String>,
    /// The offered config, until the unprivileged part says it runs it (or refuses).
    pending: Option<(Box<Config>, Policy)>,
    /// Set when the daemon stops: told to the unprivileged part in [`Answer::Status`].
    pub stopping: bool,
    actions: Option<ActionsHandle>,
    seq: Sequence,
    log: TokenBucket,
    origin: Instant,
    /// Requests refused so far.
    pub refused: u64,
    /// Requests served so far.
    pub served: u64,
}

impl Server {
    /// Serve with the real `driver`, enforcing `plan`, allowing what `policy` allows,
    /// running commands through `actions` (if any door has commands).
    pub fn new(
        driver: Box<dyn FirewallDriver>,
        plan: Plan,
        policy: Policy,
        actions: Option<ActionsHandle>,
    ) -> Server {
        Server {
            firewall: Firewall::new(driver, plan),
            base: policy.clone(),
            policy,
            generation: 0,
            bundle: None,
            pending: None,
            stopping: false,
            actions,
            seq: Sequence::default(),
            log: TokenBucket::new(LOG_PER_SEC, LOG_BURST),
            origin: Instant::now(),
            refused: 0,
            served: 0,
        }
    }

    /// The firewall (for its watcher and the flush at exit).
    pub fn firewall(&self) -> &Arc<Firewall> {
        &self.firewall
    }

    /// Offer `config` (read and checked by the privileged part itself), whose files are
    /// `bundle` (a JSON [`codec::Bundle`]), to the unprivileged part: it sees the new
    /// generation in its next status poll. Until it answers, requests that either the
    /// running or the offered config allows are served. Returns the generation.
    pub fn offer(&mut self, config: Config, bundle: String) -> u64 {
        let next = Policy::from_config(&config);
        self.generation += 1;
        self.policy = self.base.union(&next);
        self.bundle = Some(bundle);
        self.pending = Some((Box::new(config), next));
        self.generation
    }

    /// The unprivileged part's answer to an offer: the config it runs now, if it took it.
    fn settle(&mut self, generation: u64, accepted: bool) -> Option<Box<Config>> {
        if generation != self.generation {
            return None;
        }
        let (config, next) = self.pending.take()?;
        self.bundle = None;
        if accepted {
            self.base = next;
            self.policy = self.base.clone();
            tracing::info!(
                "privsep: the unprivileged part runs config generation {generation}; policy updated"
            );
            Some(config)
        } else {
            self.policy = self.base.clone();
            tracing::error!(
                "reload refused by the unprivileged part (see its message above); both parts keep the running \
                 configuration"
            );
            None
        }
    }

    /// Answer one message (`oversized`: it did not fit the receive buffer). A
    /// `Reloaded` that accepts an offer returns the config now in force, for the caller
    /// to compare the next reload with.
    pub fn handle_settling(&mut self, bytes: &[u8], oversized: bool) -> (Reply, Option<Box<Config>>) {
        let mut settled = None;
        let reply = self.handle_with(bytes, oversized, &mut settled);
        (reply, settled)
    }

    /// Answer one message (`oversized`: it did not fit the receive buffer).
    pub fn handle(&mut self, bytes: &[u8], oversized: bool) -> Reply {
        self.handle_with(bytes, oversized, &mut None)
    }

    fn handle_with(&mut self, bytes: &[u8], oversized: bool, settled: &mut Option<Box<Config>>) -> Reply {
        let decoded = if oversized {
            Err(codec::DecodeError::Oversized(bytes.len()).to_string())
        } else {
            codec::decode_request(bytes).map_err(|e| e.to_string())
        };
        let req = match decoded {
            Ok(r) => r,
            Err(e) => return self.refuse(0, &e),
        };
        if let Err(r) = self.seq.check(req.seq) {
            return self.refuse(req.seq, &r.to_string());
        }
        if let Op::Reloaded { generation, accepted } = req.op {
            *settled = self.settle(generation, accepted);
            self.served += 1;
            return Reply { v: codec::VERSION, seq: req.seq, answer: Answer::Done };
        }
        let answer = match self.act(req.op) {
            Ok(a) => a,
            Err(r) => return self.refuse(req.seq, &r.to_string()),
        };
        self.served += 1;
        Reply { v: codec::VERSION, seq: req.seq, answer }
    }

    fn refuse(&mut self, seq: u64, reason: &str) -> Reply {
        self.refused += 1;
        let now = Millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX));
        if self.log.take(now) {
            tracing::warn!(
                "privsep: REFUSED request {seq} from the unprivileged part: {} ({} refused so far)",
                reason.escape_debug(),
                self.refused
            );
        }
        Reply { v: codec::VERSION, seq, answer: Answer::Refused { reason: codec::clip(reason) } }
    }

    fn act(&mut self, op: Op) -> Result<Answer, Refusal> {
        let failed = |e: &dyn std::fmt::Display| Answer::Failed { error: codec::clip(&e.to_string()) };
        Ok(match op {
            Op::Setup => match self.firewall.setup() {
                Ok(()) => Answer::Done,
                Err(e) => failed(&e),
            },
            Op::Grant { grants } => {
                let grants = grants.iter().map(|g| self.policy.grant(g)).collect::<Result<Vec<_>, _>>()?;
                match self.firewall.grant(&grants) {
                    Ok(()) => Answer::Done,
                    Err(e) => failed(&e),
                }
            }
            Op::Revoke { keys } => {
                let keys = keys.iter().map(|k| self.policy.revoke(k)).collect::<Result<Vec<_>, _>>()?;
                match self.firewall.revoke(&keys) {
                    Ok(()) => Answer::Done,
                    Err(e) => failed(&e),
                }
            }
            Op::List { offset } => match self.firewall.list() {
                Ok(all) => {
                    let from = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
                    let to = from.saturating_add(MAX_ITEMS).min(all.len());
                    Answer::Grants {
                        grants: all[from..to].iter().map(WireLive::from).collect(),
                        more: to < all.len(),
                    }
                }
                Err(e) => failed(&e),
            },
            Op::RunCommands { door, addr, at_unix_ms } => {
                let cmds = self.policy.commands(&door)?;
                let Some(actions) = &self.actions else {
                    return Err(Refusal::NoSuchDoor(door, "command runner"));
                };
                let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(at_unix_ms);
                // The knock time only moves the stop; never let it lie in the future.
                let at = at.min(SystemTime::now());
                let queued = match actions.open(&door, addr, cmds, at) {
                    Queued::Yes => WireQueued::Yes,
                    Queued::Full => WireQueued::Full,
                    Queued::Nothing => WireQueued::Nothing,
                };
                Answer::Queued { queued }
            }
            Op::OneTimeUsed { door, used } => {
                let path = self.policy.one_time(&door)?;
                let used = Policy::services(&used)?;
                match onetime::consume(path, &used) {
                    Ok(next) => Answer::Next {
                        sequence: next.map(|s| s.into_iter().map(WireService::from).collect()),
                    },
                    Err(e) => failed(&e),
                }
            }
            Op::Status => {
                let h = self.firewall.health();
                Answer::Status {
                    problem: h.problem().map(|p| codec::clip(&p)),
                    restores: h.restores.load(std::sync::atomic::Ordering::Relaxed),
                    repair_failures: h.repair_failures.load(std::sync::atomic::Ordering::Relaxed),
                    generation: self.generation,
                    stopping: self.stopping,
                }
            }
            Op::Config { generation, offset } => {
                let bundle = self.bundle.as_deref().filter(|_| generation == self.generation);
                let Some(bundle) = bundle else {
                    return Err(Refusal::NoOffer(generation));
                };
                let from = usize::try_from(offset).unwrap_or(usize::MAX).min(bundle.len());
                if !bundle.is_char_boundary(from) {
                    return Err(Refusal::NoOffer(generation));
                }
                let to = from + codec::boundary(&bundle[from..], MAX_CHUNK);
                Answer::Config { part: bundle[from..to].to_string(), more: to < bundle.len() }
            }
            // Handled before: it changes what the caller runs.
            Op::Reloaded { .. } => Answer::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::firewall::none::NoFirewall;
    use crate::privsep::codec::{encode, Request, WireGrant, VERSION};
    use portcullis_proto::Service;

    fn server() -> Server {
        let c = config::parse(
            "[[door]]\nname = \"ssh\"\nsequence = [7000, 8000]\nopen = [\"tcp/22\"]\nopen_for = 30\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        Server::new(
            Box::new(NoFirewall::default()),
            crate::daemon::plan_for(&c),
            Policy::from_config(&c),
            None,
        )
    }

    fn grant(seq: u64, port: u16, ms: u64) -> Vec<u8> {
        let g = WireGrant {
            addr: "192.0.2.2".parse().unwrap(),
            prefix: None,
            service: Service::tcp(port).into(),
            timeout_ms: ms,
        };
        encode(&Request { v: VERSION, seq, op: Op::Grant { grants: vec![g] } })
    }

    fn refused(r: &Reply) -> bool {
        matches!(r.answer, Answer::Refused { .. })
    }

    #[test]
    fn serves_allowed_requests_and_refuses_the_rest() {
        let mut s = server();
        assert_eq!(s.handle(&grant(1, 22, 30_000), false).answer, Answer::Done);
        assert!(refused(&s.handle(&grant(2, 23, 1000), false)), "unprotected port");
        assert!(refused(&s.handle(&grant(3, 22, 30_001), false)), "too long");
        assert!(refused(&s.handle(&grant(3, 22, 1000), false)), "replayed sequence number");
        assert_eq!(s.handle(&grant(4, 22, 1000), false).answer, Answer::Done);
        let run = encode(&Request {
            v: VERSION,
            seq: 5,
            op: Op::RunCommands { door: "ssh".into(), addr: "192.0.2.2".parse().unwrap(), at_unix_ms: 0 },
        });
        assert!(refused(&s.handle(&run, false)), "no commands configured");
        assert!(refused(&s.handle(b"{\"v\":1,\"seq\":6,\"op\":\"teardown\"}", false)));
        assert!(refused(&s.handle(&[b'x'; 100], true)));
        assert_eq!(s.refused, 6);
        assert_eq!(s.served, 2);
        let list = encode(&Request { v: VERSION, seq: 6, op: Op::List { offset: 0 } });
        match s.handle(&list, false).answer {
            Answer::Grants { grants, more } => assert!(grants.len() == 1 && !more),
            a => panic!("{a:?}"),
        }
    }

    fn req(seq: u64, op: Op) -> Vec<u8> {
        encode(&Request { v: VERSION, seq, op })
    }

    #[test]
    fn a_reload_is_offered_paged_and_settled() {
        let mut s = server();
        let wider = config::parse(
            "[[door]]\nname = \"ssh\"\nsequence = [7000, 8000]\nopen = [\"tcp/22\"]\nopen_for = 90\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        assert!(
            refused(&s.handle(&req(1, Op::Config { generation: 1, offset: 0 }), false)),
            "nothing offered"
        );
        let text = "é".repeat(MAX_CHUNK);
        let generation = s.offer(wider, text.clone());
        assert_eq!(generation, 1);
        match s.handle(&req(2, Op::Status), false).answer {
            Answer::Status { generation: 1, problem: None, stopping: false, .. } => {}
            a => panic!("{a:?}"),
        }
        let mut got = String::new();
        let mut seq = 3;
        loop {
            let off = u32::try_from(got.len()).unwrap();
            match s.handle(&req(seq, Op::Config { generation: 1, offset: off }), false).answer {
                Answer::Config { part, more } => {
                    got.push_str(&part);
                    seq += 1;
                    if !more {
                        break;
                    }
                }
                a => panic!("{a:?}"),
            }
        }
        assert_eq!(got, text);
        assert!(
            refused(&s.handle(&req(seq, Op::Config { generation: 1, offset: 1 }), false)),
            "mid-character"
        );
        // While offered, either config's limit goes; after a refusal only the old one.
        assert_eq!(s.handle(&grant(seq + 1, 22, 90_000), false).answer, Answer::Done);
        let (_, settled) =
            s.handle_settling(&req(seq + 2, Op::Reloaded { generation: 1, accepted: false }), false);
        assert!(settled.is_none());
        assert!(refused(&s.handle(&grant(seq + 3, 22, 90_000), false)));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut s = server();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..2000usize {
            let bytes: Vec<u8> = (0..n % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"{}[]\":,01vseqopgrant_setup "[(x % 27) as usize]
                })
                .collect();
            assert!(refused(&s.handle(&bytes, false)));
        }
    }
}
