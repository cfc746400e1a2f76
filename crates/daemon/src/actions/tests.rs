//! Runner tests with real `/bin/sh` commands that append to a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::config::{CommandLine, Commands};
use crate::lab::wait_until;

fn cmds(dir: &Path, start: &str, stop: &str, after: Duration) -> Commands {
    let log = dir.join("log").display().to_string();
    let line = |tag: &str| Some(CommandLine::Shell(format!("echo {tag} %IP% >> {log}")));
    Commands {
        start4: line(start),
        start6: line(start),
        stop4: line(stop),
        stop6: line(stop),
        cmd_timeout: after,
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

fn state(dir: &Path) -> PathBuf {
    let s = dir.join("state");
    std::fs::create_dir_all(&s).unwrap();
    s
}

#[test]
fn runs_start_then_stop_after_cmd_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let a = Actions::start(&state(dir.path()), Duration::from_secs(5)).unwrap();
    let h = a.handle();
    let c = cmds(dir.path(), "start", "stop", Duration::from_millis(600));
    let t = Instant::now();
    assert_eq!(h.open("ssh", "192.0.2.2".parse().unwrap(), &c, SystemTime::now()), Queued::Yes);
    assert!(wait_until(Duration::from_secs(2), || log(dir.path()).contains("start 192.0.2.2")));
    assert_eq!(log(dir.path()).lines().count(), 1, "stop must wait");
    assert!(wait_until(Duration::from_secs(3), || log(dir.path()).lines().count() == 2));
    assert!(t.elapsed() >= Duration::from_millis(600));
    assert!(wait_until(Duration::from_secs(2), || {
        std::fs::read_to_string(dir.path().join("state/pending-stops.toml"))
            .is_ok_and(|t| !t.contains("[[stop]]"))
    }));
}

#[test]
fn repeat_knock_extends_instead_of_stacking() {
    let dir = tempfile::tempdir().unwrap();
    let a = Actions::start(&state(dir.path()), Duration::from_secs(5)).unwrap();
    let h = a.handle();
    let c = cmds(dir.path(), "start", "stop", Duration::from_millis(800));
    let ip: IpAddr = "2001:db8::2".parse().unwrap();
    let t = Instant::now();
    h.open("ssh", ip, &c, SystemTime::now());
    std::thread::sleep(Duration::from_millis(500));
    h.open("ssh", ip, &c, SystemTime::now());
    assert!(
        wait_until(Duration::from_secs(4), || log(dir.path()).lines().count() == 2),
        "{}",
        log(dir.path())
    );
    assert!(t.elapsed() >= Duration::from_millis(1250), "stop was not moved: {:?}", t.elapsed());
    let text = log(dir.path());
    assert_eq!(text.matches("start 2001:db8::2").count(), 1, "start ran twice:\n{text}");
}

#[test]
fn a_hung_command_is_killed_and_does_not_block_others() {
    let dir = tempfile::tempdir().unwrap();
    let a = Actions::start(&state(dir.path()), Duration::from_millis(700)).unwrap();
    let h = a.handle();
    let hung = Commands {
        start4: Some(CommandLine::Shell("sleep 60".into())),
        cmd_timeout: Duration::from_secs(60),
        ..Commands::default()
    };
    for i in 0..WORKERS {
        h.open(&format!("hung{i}"), "192.0.2.9".parse().unwrap(), &hung, SystemTime::now());
    }
    let c = cmds(dir.path(), "start", "stop", Duration::from_secs(60));
    let t = Instant::now();
    h.open("ssh", "192.0.2.2".parse().unwrap(), &c, SystemTime::now());
    // Every worker is busy with a hung command: ours runs once they are killed.
    assert!(wait_until(Duration::from_secs(3), || log(dir.path()).contains("192.0.2.2")));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(wait_until(Duration::from_secs(2), || a.handle().idle()));
}

#[test]
fn pending_stops_survive_a_restart_and_overdue_ones_run_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let c = cmds(dir.path(), "start", "stop", Duration::from_millis(1500));
    let a = Actions::start(&st, Duration::from_secs(5)).unwrap();
    a.handle().open("ssh", "192.0.2.2".parse().unwrap(), &c, SystemTime::now());
    a.handle().open("ssh", "192.0.2.3".parse().unwrap(), &c, SystemTime::now() - Duration::from_secs(60));
    assert!(wait_until(Duration::from_secs(2), || log(dir.path()).lines().count() >= 2));
    // "Crash": the threads go, the file stays. The overdue one may or may not have run.
    drop(a);
    let saved = std::fs::read_to_string(st.join("pending-stops.toml")).unwrap();
    assert!(saved.contains("192.0.2.2"), "{saved}");
    let before = log(dir.path()).matches("start 192.0.2.2").count();
    assert_eq!(before, 1);
    assert!(!log(dir.path()).contains("stop 192.0.2.2"), "stop ran before its time");
    let t = Instant::now();
    let b = Actions::start(&st, Duration::from_secs(5)).unwrap();
    assert!(wait_until(Duration::from_secs(4), || log(dir.path()).contains("stop 192.0.2.2")));
    assert!(t.elapsed() >= Duration::from_millis(800), "ran early: {:?}", t.elapsed());
    assert!(log(dir.path()).contains("stop 192.0.2.3"), "overdue stop ran");
    drop(b);
}

#[test]
fn nothing_runs_for_a_family_without_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let a = Actions::start(&state(dir.path()), Duration::from_secs(5)).unwrap();
    let mut c = cmds(dir.path(), "start", "stop", Duration::from_secs(1));
    c.start6 = None;
    assert_eq!(a.handle().open("d", "2001:db8::1".parse().unwrap(), &c, SystemTime::now()), Queued::Nothing);
}

/// fwknop's `CMD_CYCLE_OPEN` that hangs: killed at the command time limit, the other
/// commands still run, and its close command still runs on time (and survives a
/// restart: it is recorded before the open command starts).
#[test]
fn a_hanging_cmd_cycle_open_is_bounded_and_its_close_still_runs() {
    use crate::actions::subst::{fwknop_argv, FwknopVars};
    let dir = tempfile::tempdir().unwrap();
    let logf = dir.path().join("log").display().to_string();
    let vars = FwknopVars {
        ip: "192.0.2.2".parse().unwrap(),
        pkt_src: "192.0.2.2".parse().unwrap(),
        dst: None,
        port: 22,
        proto: portcullis_proto::Proto::Tcp,
        timeout: 1,
    };
    let words = |s: &str| crate::config::stanza::split_command(s).unwrap();
    let open = fwknop_argv(&words("/bin/sh -c 'sleep 30'"), &vars);
    let close = fwknop_argv(&words(&format!("/bin/sh -c 'echo close \"$0\" >> {logf}' $SRC/$PORT")), &vars);
    let c = Commands {
        start4: Some(CommandLine::Argv(open)),
        start6: None,
        stop4: Some(CommandLine::Argv(close)),
        stop6: None,
        cmd_timeout: Duration::from_secs(1),
    };
    let a = Actions::start(&state(dir.path()), Duration::from_millis(400)).unwrap();
    let t = Instant::now();
    assert_eq!(a.handle().open("fwknop stanza #1 tcp/22", vars.ip, &c, SystemTime::now()), Queued::Yes);
    assert!(wait_until(Duration::from_secs(4), || log(dir.path()).contains("close 192.0.2.2/22")));
    assert!(t.elapsed() < Duration::from_secs(4), "the hung open command held up its close");
}
