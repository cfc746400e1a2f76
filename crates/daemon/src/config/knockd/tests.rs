//! knockd.conf parser tests: every option, odd spacing and case, comments, the how-to
//! configs from the issue (shipped as `examples/knockd/*.conf` and shared with the
//! end-to-end tests), and broken files with their line numbers.

use std::path::Path;
use std::time::Duration;

use portcullis_proto::{FlagFilter, Service, TcpFlags};

use super::*;
use crate::config::convert::to_toml;
use crate::config::{self, CommandLine, Interfaces, LogTarget};

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("knockd.conf"))
}

fn sh(s: &str) -> Option<CommandLine> {
    Some(CommandLine::Shell(s.into()))
}

const HOWTO_1: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/knockd/howto-open-close.conf"));

const HOWTO_2: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/knockd/howto-openclose-cmd-timeout.conf"
));

const HOWTO_3: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/knockd/howto-user-chain.conf"));

#[test]
fn reads_the_howto_configs_unchanged() {
    let c = p(HOWTO_1).unwrap();
    assert_eq!(c.daemon.log, LogTarget::Syslog);
    assert_eq!(c.daemon.interfaces, Interfaces::All);
    assert_eq!(c.daemon.backend, config::Backend::None);
    assert_eq!(c.doors.len(), 2);
    let d = &c.doors[0];
    assert_eq!(d.name, "openSSH");
    assert_eq!(d.sequence, vec![Service::tcp(7000), Service::tcp(8000), Service::tcp(9000)]);
    assert_eq!(d.seq_timeout, Duration::from_secs(15));
    assert_eq!(d.flags, FlagFilter { set: TcpFlags::SYN, clear: 0 });
    assert!(d.open.is_empty());
    let cmds = d.commands.as_ref().unwrap();
    assert_eq!(cmds.start4, sh("/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"));
    assert_eq!(cmds.start6, cmds.start4, "absent Start_Command_6 falls back");
    assert_eq!(cmds.stop4, None);
    assert_eq!(cmds.cmd_timeout, DEFAULT_CMD_TIMEOUT);
    assert_eq!(c.doors[1].sequence[0], Service::tcp(9000));

    let c = p(HOWTO_2).unwrap();
    assert_eq!(c.daemon.log, LogTarget::Stderr);
    assert_eq!(c.daemon.log_file.as_deref(), Some(Path::new("/var/log/knockd.log")));
    let d = &c.doors[0];
    assert_eq!(d.sequence, vec![Service::udp(2222), Service::tcp(3333), Service::udp(4444)]);
    let cmds = d.commands.as_ref().unwrap();
    assert_eq!(cmds.stop4, sh("/usr/sbin/iptables -D INPUT -s %IP% -p tcp --syn --dport 22 -j ACCEPT"));
    assert_eq!(cmds.cmd_timeout, Duration::from_secs(10));

    let c = p(HOWTO_3).unwrap();
    let d = &c.doors[0];
    assert_eq!(d.flags, FlagFilter { set: TcpFlags::SYN | TcpFlags::ACK, clear: 0 });
    assert!(!d.flags.matches(TcpFlags(TcpFlags::SYN)), "a plain SYN does not match syn,ack (as in knockd)");
    // /usr/bin/iptables does not exist on Debian: accepted, with a warning.
    if !Path::new("/usr/bin/iptables").exists() {
        let w = c.warnings().join("\n");
        assert!(w.contains("/usr/bin/iptables, which does not exist"), "{w}");
    }
}

#[test]
fn every_option_odd_spacing_case_and_comments() {
    let text = "# a comment\n\
        \n\
        [OPTIONS]\n\
        usesyslog\n\
          LOGFILE=/tmp/k.log   \n\
        PidFile =   /run/k.pid\n\
        Interface= eth1 , wg0\n\
        \n\
        [door-1]\n\
        # comment inside a door\n\
        SEQUENCE=  1000 : UDP ,2000:tcp,  3000  \n\
        Timeout = 7\n\
        TCPFlags = SYN , !ACK,! urg\n\
        Start_Command=echo start %IP%\n\
        Start_Command_6 =\n\
        Cmd_Timeout=0\n\
        STOP_COMMAND = echo stop %IP%\n\
        stop_command_6 = echo stop6 %IP%\n\
        Target = 2001:db8::1\r\n\
        [door.2]\n\
        sequence = 4000\n\
        command = echo a\n\
        command_6 = echo b\n";
    let c = p(text).unwrap();
    assert_eq!(c.daemon.log, LogTarget::Syslog);
    assert_eq!(c.daemon.log_file.as_deref(), Some(Path::new("/tmp/k.log")));
    assert_eq!(c.daemon.pid_file.as_deref(), Some(Path::new("/run/k.pid")));
    assert_eq!(c.daemon.interfaces, Interfaces::Named(vec!["eth1".into(), "wg0".into()]));
    let d = &c.doors[0];
    assert_eq!(d.name, "door-1");
    assert_eq!(d.sequence, vec![Service::udp(1000), Service::tcp(2000), Service::tcp(3000)]);
    assert_eq!(d.seq_timeout, Duration::from_secs(7));
    assert_eq!(d.flags, FlagFilter { set: TcpFlags::SYN, clear: TcpFlags::ACK | TcpFlags::URG });
    assert_eq!(d.target, Some("2001:db8::1".parse().unwrap()));
    let cmds = d.commands.as_ref().unwrap();
    assert_eq!(cmds.start4, sh("echo start %IP%"));
    assert_eq!(cmds.start6, None, "an empty Start_Command_6 means: nothing for IPv6");
    assert_eq!(cmds.stop6, sh("echo stop6 %IP%"));
    assert_eq!(cmds.cmd_timeout, Duration::ZERO);
    let d = &c.doors[1];
    assert_eq!(d.seq_timeout, DEFAULT_SEQ_TIMEOUT);
    assert_eq!(d.flags, FlagFilter::ANY, "no TCPFlags: any flags, like knockd");
    let cmds = d.commands.as_ref().unwrap();
    assert_eq!((cmds.start4.clone(), cmds.start6.clone()), (sh("echo a"), sh("echo b")));
}

#[test]
fn refuses_broken_files_naming_the_line() {
    let door = "[d]\nsequence = 1,2,3\ncommand = true\n";
    let cases: &[(&str, usize, &str)] = &[
        ("[options]\nUseSyslog\nLogLevel = 3\n", 3, "unknown option \"loglevel\""),
        ("[d]\nsequence = 1,2,3\ncommand = true\nsequense = 4\n", 4, "unknown option \"sequense\""),
        ("[options]\nUseSyslog\n\n[d]\nseq_timeout = 5\ncommand = true\n", 4, "no Sequence"),
        ("[d]\nsequence = 1,2,3\n", 1, "no Start_Command"),
        ("[d]\nsequence = 1,70000,3\ncommand = true\n", 2, "70000 is out of range"),
        ("[d]\nsequence = 1,0,3\ncommand = true\n", 2, "0 is out of range"),
        ("[d]\nsequence = 1:icmp\ncommand = true\n", 2, "tcp or udp"),
        ("[d]\nsequence = 1,,3\ncommand = true\n", 2, "empty knock"),
        ("[d]\nsequence = 1,x,3\ncommand = true\n", 2, "not PORT"),
        ("[d]\nsequence = 1,2\ncommand = true\nseq_timeout = soon\n", 4, "seq_timeout"),
        ("[d]\nsequence = 1,2\ncommand = true\ncmd_timeout = -1\n", 4, "cmd_timeout"),
        ("[d]\nsequence = 1,2\ncommand = true\ntcpflags = syn,foo\n", 4, "foo"),
        ("[d]\nsequence = 1,2\ncommand = true\ntarget = example.org\n", 4, "not an IP"),
        ("[d]\nsequence = 1,2\ncommand = true\nstart_command = false\n", 4, "given twice"),
        ("[d]\nsequence = 1,2\ncommand = true\n[d]\nsequence = 3\ncommand = true\n", 4, "defined twice"),
        ("sequence = 1,2\n[d]\n", 1, "outside any section"),
        ("[d]\nsequence\ncommand = true\n", 2, "needs a value"),
        ("[options]\nUseSyslog = yes\n", 2, "bare word"),
        ("[options]\nlogfile = relative.log\n", 2, "absolute"),
        ("[options]\ninterface = ../x\n", 2, "interface"),
        ("[open ssh]\n", 1, "door name"),
        ("[d\n", 1, "closing"),
    ];
    for (text, line, needle) in cases {
        let e = p(text).expect_err(text);
        assert_eq!(e.line, Some(*line), "{text:?} -> {e}");
        assert!(e.message.contains(needle), "{text:?}: {:?} lacks {needle:?}", e.message);
        assert!(e.to_string().starts_with(&format!("knockd.conf:{line}: ")), "{e}");
    }
    let long = (1..=33).map(|i| (1000 + i).to_string()).collect::<Vec<_>>().join(",");
    let e = p(&format!("[d]\n\nsequence = {long}\ncommand = true\n")).unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("at most 32"), "{e}");
    let ok32 = (1..=32).map(|i| (1000 + i).to_string()).collect::<Vec<_>>().join(",");
    assert_eq!(p(&format!("[d]\nsequence = {ok32}\ncommand = true\n")).unwrap().doors[0].sequence.len(), 32);
    assert!(p(door).is_ok());
    let e = p("[options]\nUseSyslog\n").unwrap_err();
    assert!(e.message.contains("no doors"), "{e}");
}

#[test]
fn detects_the_format() {
    assert!(looks_like_knockd(HOWTO_1));
    assert!(looks_like_knockd("# hi\n[openSSH]\nsequence = 1\n"));
    assert!(!looks_like_knockd("[daemon]\nlog = 'stderr'\n[[door]]\nname='a'\n"));
    assert!(!looks_like_knockd("[[door]]\nname = 'x'\n[door.more]\n"));
    assert!(!looks_like_knockd(""));
}

#[test]
fn one_time_sequences_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("otp.txt");
    std::fs::write(&f, "#used\n 1111,2222:udp\n 3333\n").unwrap();
    let c = p(&format!("[d]\none_time_sequences = {}\ncommand = true\n", f.display())).unwrap();
    let d = &c.doors[0];
    assert_eq!(d.sequence, vec![Service::tcp(1111), Service::udp(2222)]);
    let ot = d.one_time.as_ref().unwrap();
    assert_eq!(ot.remaining.len(), 2);
    assert_eq!(ot.remaining[1].line, 3);
    assert_eq!(
        d.all_knocks(),
        vec![
            Service::tcp(1111),
            Service::udp(2222),
            Service::tcp(1111),
            Service::udp(2222),
            Service::tcp(3333)
        ]
    );
    std::fs::write(&f, " 1111\n 99999\n").unwrap();
    let e = p(&format!("[d]\n\none_time_sequences = {}\ncommand = true\n", f.display())).unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("line 2") && e.message.contains("99999"), "{e}");
    std::fs::write(&f, "#1111\n").unwrap();
    let c = p(&format!("[d]\none_time_sequences = {}\ncommand = true\n", f.display())).unwrap();
    assert!(c.doors[0].sequence.is_empty());
    assert!(c.warnings().join("\n").contains("disabled"));
}

#[test]
fn converts_to_native_toml_that_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("otp.txt");
    std::fs::write(&f, " 1111,2222:udp\n").unwrap();
    let extra = format!(
        "[options]\nPidFile = /run/x.pid\nInterface = eth0\n[odd]\nsequence = 5,6:udp\ntcpflags = syn,!ack\n\
         start_command = echo \"q\" 'x' \\ %IP%\nstart_command_6 =\nstop_command_6 = echo v6 %IP%\n\
         target = 192.0.2.9\n[otp]\none_time_sequences = {}\ncommand = true\n",
        f.display()
    );
    for text in [HOWTO_1, HOWTO_2, HOWTO_3, extra.as_str()] {
        let c = p(text).unwrap();
        let toml = to_toml(&c);
        let back =
            config::parse(&toml, Path::new("converted.toml")).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(back.daemon, c.daemon, "{toml}");
        assert_eq!(back.doors, c.doors, "{toml}");
    }
}

#[test]
fn native_toml_accepts_commands_in_both_forms() {
    let c = config::parse(
        "[[door]]\nname = 'a'\nsequence = [1, 2, 3]\nstart_command = ['/usr/sbin/iptables', '-A', 'INPUT', '-s', '%IP%']\n\
         stop_command = 'iptables -D INPUT -s %IP%'\nstart_command_6 = ''\ncmd_timeout = '1500ms'\n",
        Path::new("n.toml"),
    )
    .unwrap();
    let cmds = c.doors[0].commands.as_ref().unwrap();
    assert!(matches!(&cmds.start4, Some(CommandLine::Argv(v)) if v.len() == 5));
    assert_eq!(cmds.start6, None);
    assert_eq!(cmds.stop6, cmds.stop4);
    assert_eq!(cmds.cmd_timeout, Duration::from_millis(1500));
    let e = config::parse(
        "[[door]]\nname = 'a'\nsequence = [1]\nstart_command = ['%IP%']\n",
        Path::new("n.toml"),
    )
    .unwrap_err();
    assert_eq!(e.line, Some(4));
    let e = config::parse("[[door]]\nname = 'a'\nsequence = [1]\n", Path::new("n.toml")).unwrap_err();
    assert!(e.message.contains("start_command"), "{e}");
}
