//! `portcullisd check`: validate a config, refuse whatever `run` would refuse at start,
//! and show what the daemon would do.
//!
//! `run` refuses more than a config's syntax: a firewall backend it cannot drive, an API
//! tokens file that does not load, a file it cannot write. [`preflight`] runs those
//! same constructors and loaders (without installing or binding anything), so an
//! `ExecStartPre=portcullisd check` refuses exactly the configs the daemon would.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::Tokens;
use crate::config::{self, CommandLine, Config, Interfaces};
use crate::daemon::{driver_for, plan_for};
use crate::firewall::nft;

/// Print the effective plan (unless `quiet`), or why the daemon would refuse to start.
/// Exit 2 if it would.
pub fn check(path: &Path, format: config::Format, quiet: bool) -> anyhow::Result<ExitCode> {
    let c = match config::load_as(path, format) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullisd: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match preflight(&c) {
        Ok(ready) => {
            if !quiet {
                print!("{}", report(&c, &ready));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in problems {
                eprintln!("portcullisd: {}: {p}", path.display());
            }
            Ok(ExitCode::from(2))
        }
    }
}

/// What [`preflight`] learnt that the plan shows.
#[derive(Debug, Clone, Default)]
pub struct Ready {
    /// How many API tokens the tokens file holds, if `[api]` is configured.
    pub api_tokens: Option<usize>,
}

/// Everything `run` checks at start that a valid config does not already guarantee and
/// that can be checked without changing anything: the firewall backend can be set up,
/// the API tokens file loads (owner, mode, syntax), and the files the daemon writes have
/// a directory to go in. Returns every problem, not just the first.
pub fn preflight(c: &Config) -> Result<Ready, Vec<String>> {
    let mut problems = Vec::new();
    if let Err(e) = driver_for(c) {
        problems.push(format!("backend {}: {e:#}", c.daemon.backend));
    }
    let mut ready = Ready::default();
    if let Some(api) = &c.api {
        match Tokens::load(&api.tokens_file) {
            Ok(t) => ready.api_tokens = Some(t.len()),
            Err(e) => problems.push(format!("api tokens_file: {e}")),
        }
    }
    let d = &c.daemon;
    if let Err(e) = creatable_dir(&d.state_dir) {
        problems.push(format!("state_dir {}: {e}", d.state_dir.display()));
    } else if let Ok(md) = std::fs::metadata(&d.state_dir) {
        // What `run` refuses (it also tightens the mode to 0700 and takes the lock).
        if let Err(e) = crate::fsperm::check_trusted(&d.state_dir, &md) {
            problems.push(format!("state_dir {e}"));
        }
    }
    for (what, file) in [("log_file", &d.log_file), ("pid_file", &d.pid_file)] {
        let Some(file) = file else { continue };
        match file.parent() {
            Some(dir) if dir.is_dir() => {}
            _ => problems.push(format!("{what} {}: its directory does not exist", file.display())),
        }
    }
    if problems.is_empty() {
        Ok(ready)
    } else {
        Err(problems)
    }
}

/// `dir` is a directory, or `create_dir_all` could make it: its nearest existing
/// ancestor is a directory.
fn creatable_dir(dir: &Path) -> Result<(), String> {
    use std::io::ErrorKind;
    let mut at = Some(dir);
    while let Some(p) = at {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(format!("{} is not a directory", p.display())),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => at = p.parent(),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    Ok(())
}

/// The plan as text, with rotating sequences for the current time.
pub fn report(c: &Config, ready: &Ready) -> String {
    report_at(c, ready, SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// The plan as text, rotating sequences as of Unix time `now` (pure, for tests).
pub fn report_at(c: &Config, ready: &Ready, now: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "config {} is valid", c.path.display());
    let ifs = match &c.daemon.interfaces {
        Interfaces::All => "all".to_string(),
        Interfaces::Named(n) => n.join(", "),
    };
    let _ = writeln!(
        s,
        "interfaces: {ifs}; backend: {}; state dir: {}",
        c.daemon.backend,
        c.daemon.state_dir.display()
    );
    doors(&mut s, c, now);
    spa(&mut s, c);
    api(&mut s, c, ready);
    let plan = plan_for(c);
    let prot: Vec<String> = plan.protected.iter().map(ToString::to_string).collect();
    let _ = writeln!(s, "\nprotected (dropped unless granted): {}", prot.join(", "));
    for line in crate::firewall::describe(&c.daemon.backend.to_string(), &plan) {
        let _ = writeln!(s, "{line}");
    }
    let warnings = c.warnings();
    if !warnings.is_empty() {
        let _ = writeln!(s, "\nwarnings:");
        for w in warnings {
            let _ = writeln!(s, "  - {w}");
        }
    }
    if c.daemon.backend == config::Backend::Nftables {
        let _ = writeln!(s, "\nequivalent nftables ruleset:\n{}", nft::render(&plan));
    }
    s
}

fn list(items: impl IntoIterator<Item = impl ToString>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn doors(s: &mut String, c: &Config, now: u64) {
    if c.doors.is_empty() {
        return;
    }
    let _ = writeln!(s, "\ndoors:");
    for d in &c.doors {
        let seq = match d.rotating {
            Some(_) => "a rotating sequence".to_string(),
            None => list(d.sequence.iter().map(|k| format!("{}:{}", k.port, k.proto))),
        };
        let _ = writeln!(
            s,
            "  {}: knock {seq} within {}, tcp flags {} -> open {} for {}{}",
            d.name,
            humantime::format_duration(d.seq_timeout),
            d.flags,
            list(&d.open),
            humantime::format_duration(d.open_for),
            d.target.map(|t| format!(" (knocks to {t} only)")).unwrap_or_default()
        );
        if let Some(ot) = &d.one_time {
            let _ =
                writeln!(s, "    one-time sequences: {} ({} unused)", ot.path.display(), ot.remaining.len());
        }
        if let Some(r) = &d.rotating {
            rotating(s, r, now);
        }
        if let Some(cmds) = &d.commands {
            let show = |c: &Option<CommandLine>| match c {
                None => "(nothing)".to_string(),
                Some(CommandLine::Shell(x)) => format!("sh -c {x:?}"),
                Some(CommandLine::Argv(v)) => format!("{v:?}"),
            };
            let _ = writeln!(s, "    start (IPv4): {}", show(&cmds.start4));
            let _ = writeln!(s, "    start (IPv6): {}", show(&cmds.start6));
            let _ = writeln!(
                s,
                "    stop after {}: IPv4 {}, IPv6 {}",
                humantime::format_duration(cmds.cmd_timeout),
                show(&cmds.stop4),
                show(&cmds.stop6)
            );
        }
    }
}

/// A rotating door's definition and its sequences now and next (never its secret).
fn rotating(s: &mut String, r: &config::RotatingDoor, now: u64) {
    let rot = &r.rotation;
    let _ = writeln!(
        s,
        "    rotating: {}, {} knocks in {}, step {} s, secret {}",
        r.algorithm_name(),
        rot.count(),
        rot.range(),
        rot.step_secs(),
        r.secret_file.display()
    );
    let step = rot.step_at(now);
    for (label, st) in [("previous", step.saturating_sub(1)), ("current", step), ("next", step + 1)] {
        let from = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(rot.step_start(st)));
        let seq = portcullis_proto::rotate::format_knocks(&rot.sequence(st));
        let _ = writeln!(s, "    {label:>8} step {st} (from {from}): {seq}");
    }
}

fn spa(s: &mut String, c: &Config) {
    let Some(spa) = &c.spa else { return };
    let _ = writeln!(
        s,
        "\nspa: udp port(s) {}; packets older or newer than {} s refused",
        list(&spa.ports),
        spa.max_age
    );
    if !spa.protect.is_empty() {
        let _ = writeln!(s, "  also protected: {}", list(&spa.protect));
    }
    match &spa.server_key {
        Some(k) => {
            let _ = writeln!(s, "  native: server public key {} (give it to clients)", k.public());
        }
        None => {
            let _ = writeln!(s, "  native: off (no server_key_file)");
        }
    }
    let mut users: Vec<_> = spa.users.iter().collect();
    users.sort_by(|a, b| a.0.cmp(b.0));
    for (name, u) in users {
        let _ = writeln!(
            s,
            "  native user {name}: may open {} for up to {}",
            list(&u.open),
            humantime::format_duration(u.max_open_for)
        );
    }
    for st in &spa.stanzas {
        let source = if st.source.is_empty() {
            "any".to_string()
        } else {
            list(st.source.iter().map(|c| format!("{}/{}", c.addr, c.prefix)))
        };
        let open =
            if st.open_ports.is_empty() { "any protected service".into() } else { list(&st.open_ports) };
        let hmac = st.key.hmac_type().map_or("no HMAC".to_string(), |h| format!("HMAC {h}"));
        let _ = writeln!(
            s,
            "  fwknop stanza {}: from {source}, {hmac}, may open {open} for {} (client may ask up to {}){}{}",
            st.name,
            humantime::format_duration(st.fw_access_timeout),
            humantime::format_duration(st.max_fw_timeout),
            st.require_username.as_ref().map(|u| format!(", user {u} only")).unwrap_or_default(),
            if st.restrict_ports.is_empty() {
                String::new()
            } else {
                format!(", never {}", list(&st.restrict_ports))
            },
        );
    }
}

fn api(s: &mut String, c: &Config, ready: &Ready) {
    let Some(api) = &c.api else { return };
    let mut at = Vec::new();
    if let Some(p) = &api.socket {
        at.push(format!("unix:{}", p.display()));
    }
    if let Some(a) = api.listen {
        at.push(format!("http://{a}"));
    }
    let _ = writeln!(s, "\napi: serving on {}", at.join(" and "));
    let tokens = ready.api_tokens.map_or("not read".to_string(), |n| format!("{n} token(s)"));
    let _ = writeln!(s, "  bearer tokens: {} ({tokens})", api.tokens_file.display());
    let _ = writeln!(
        s,
        "  grants last {} unless asked, at most {}",
        humantime::format_duration(api.default_duration),
        humantime::format_duration(api.max_duration)
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use portcullis_proto::spa::native::{ServerKey, UserKey};

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("pc-check-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const DOOR: &str = "[[door]]\nname = 'ssh'\nsequence = [7000, 9000, 8000]\nopen = ['tcp/22']\n";

    fn load(dir: &Dir, text: &str) -> Config {
        let p = dir.write("portcullis.toml", text, 0o600);
        config::load(&p).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn backend_is_printed_as_the_config_spells_it() {
        let d = Dir::new("backend");
        for (backend, shown) in
            [("nftables", "nftables"), ("iptables-legacy", "iptables-legacy"), ("none", "none")]
        {
            let c = load(&d, &format!("[daemon]\nbackend = '{backend}'\n{DOOR}"));
            let text = report(&c, &Ready::default());
            assert!(
                text.contains(&format!(
                    "interfaces: all; backend: {shown}; state dir: /var/lib/portcullis\n"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_a_state_dir_others_may_write() {
        let d = Dir::new("statedir");
        let state = d.0.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let c = load(&d, &format!("[daemon]\nbackend = 'none'\nstate_dir = '{}'\n{DOOR}", state.display()));
        let e = preflight(&c).unwrap_err();
        assert!(e.len() == 1 && e[0].contains("group/others may write it"), "{e:?}");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(preflight(&c).is_ok());
    }

    #[test]
    fn refuses_what_run_refuses_for_the_api_tokens_file() {
        let d = Dir::new("tokens");
        let text = format!("[daemon]\nbackend = 'none'\n[api]\nsocket = ''\nlisten = '127.0.0.1:9\'\ntokens_file = 'tokens'\n{DOOR}");
        let c = load(&d, &text);
        let missing = d.0.join("tokens");
        assert_eq!(
            preflight(&c).unwrap_err(),
            vec![format!(
                "api tokens_file: cannot read {}: No such file or directory (os error 2)",
                missing.display()
            )]
        );
        d.write("tokens", "admin s3cret-token-that-is-long-enough\n", 0o644);
        let e = preflight(&c).unwrap_err();
        assert_eq!(
            e,
            vec![format!(
                "api tokens_file: {} (owner uid {}, mode 0644): holds secrets but group/others may read or write \
                 it; chmod 600 {}",
                missing.display(),
                nix::unistd::geteuid(),
                missing.display()
            )]
        );
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ready = preflight(&c).unwrap();
        assert_eq!(ready.api_tokens, Some(1));
        let text = report(&c, &ready);
        let expected = format!(
            "\napi: serving on http://127.0.0.1:9\n  bearer tokens: {} (1 token(s))\n  grants last 1m unless asked, at most 1h\n",
            missing.display()
        );
        assert!(text.contains(&expected), "{text}");
    }

    #[test]
    fn refuses_files_the_daemon_could_not_write() {
        let d = Dir::new("files");
        let file = d.write("plain", "", 0o600);
        let c = load(
            &d,
            &format!(
                "[daemon]\nbackend = 'none'\nstate_dir = '{}/sub'\nlog_file = '/nonexistent-dir/x.log'\n{DOOR}",
                file.display()
            ),
        );
        assert_eq!(
            preflight(&c).unwrap_err(),
            vec![
                format!("state_dir {}/sub: {} is not a directory", file.display(), file.display()),
                "log_file /nonexistent-dir/x.log: its directory does not exist".to_string(),
            ]
        );
        let c = load(&d, &format!("[daemon]\nbackend = 'none'\nstate_dir = '{}/a/b'\n{DOOR}", d.0.display()));
        assert!(preflight(&c).is_ok());
    }

    #[test]
    fn prints_the_spa_plan() {
        let d = Dir::new("spa");
        let server = ServerKey::from_bytes([7; 32]);
        d.write("server.key", &server.to_text(), 0o600);
        let user = UserKey::from_bytes(&[9; 32]).public();
        let c = load(
            &d,
            &format!(
                "[daemon]\nbackend = 'none'\n[spa]\nserver_key_file = 'server.key'\n\
                 [[spa.user]]\nname = 'alice'\nkey = '{user}'\nopen = ['tcp/22']\nmax_open_for = 120\n\
                 [[spa.fwknop]]\nname = 'laptop'\nsource = ['192.0.2.0/24']\nkey = 'fwknoptest'\n\
                 hmac_key = 'hmactest'\nopen_ports = ['tcp/22']\nrequire_username = 'bob'\n"
            ),
        );
        let text = report(&c, &preflight(&c).unwrap());
        let expected = format!(
            "\nspa: udp port(s) 62201; packets older or newer than 120 s refused\n\
             \x20 native: server public key {} (give it to clients)\n\
             \x20 native user alice: may open tcp/22 for up to 2m\n\
             \x20 fwknop stanza laptop: from 192.0.2.0/24, HMAC sha256, may open tcp/22 for 30s \
             (client may ask up to 5m), user bob only\n",
            server.public()
        );
        assert!(text.contains(&expected), "{text}");
    }
}
