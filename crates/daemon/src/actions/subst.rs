//! `%IP%` substitution, injection-proof by construction.
//!
//! # Security
//! The knocker's address reaches a command only as *data*: we format it ourselves from
//! a parsed [`IpAddr`] (attacker bytes never become text), and even that text is never
//! spliced into anything a shell parses. A shell command line has each `%IP%` rewritten
//! to a reference to the positional parameter `$1`, quoted for the context it appears in,
//! and runs as `/bin/sh -c SCRIPT portcullis ADDRESS`; the shell expands `"${1}"` to one
//! word after parsing, so nothing in it is ever interpreted (no `;`, `$( )`, backticks,
//! quotes, globs or word splitting). An argv command is exec'd without a shell. The
//! address is also in the environment as `PORTCULLIS_IP`.

use std::net::IpAddr;
use std::process::Command;

use crate::config::CommandLine;

/// The token knockd substitutes.
pub const TOKEN: &str = "%IP%";

/// Rewrite every `%IP%` in a shell command line into a quoted reference to `$1`:
/// `"${1}"` outside quotes, `${1}` inside double quotes, and `'"${1}"'` inside single
/// quotes (close the single quotes, expand, reopen). The rest of the line is unchanged.
pub fn shell_script(cmd: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Q {
        None,
        Single,
        Double,
    }
    let mut out = String::with_capacity(cmd.len() + 16);
    let mut q = Q::None;
    let mut rest = cmd;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with(TOKEN) {
            out.push_str(match q {
                Q::None => "\"${1}\"",
                Q::Double => "${1}",
                Q::Single => "'\"${1}\"'",
            });
            rest = &rest[TOKEN.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        match (q, c) {
            (Q::None, '\'') => q = Q::Single,
            (Q::Single, '\'') => q = Q::None,
            (Q::None, '"') => q = Q::Double,
            (Q::Double, '"') => q = Q::None,
            // A backslash outside single quotes escapes the next character: copy it as is.
            (Q::None | Q::Double, '\\') => {
                if let Some(n) = rest.chars().next() {
                    out.push(n);
                    rest = &rest[n.len_utf8()..];
                }
            }
            _ => {}
        }
    }
    out
}

/// The process for `cmd` run for `addr` (not yet spawned; stdio is the caller's choice).
pub fn command(cmd: &CommandLine, addr: IpAddr) -> Command {
    command_with_arg(cmd, &addr.to_string())
}

/// [`command`] with the address already as text. Private to the crate so that only
/// tests can pass arbitrary text: the daemon always goes through [`command`].
pub(crate) fn command_with_arg(cmd: &CommandLine, arg: &str) -> Command {
    let mut c = match cmd {
        CommandLine::Shell(line) => {
            let mut c = Command::new("/bin/sh");
            // $0 is "portcullis" (used in the shell's own error messages), $1 the address.
            c.arg("-c").arg(shell_script(line)).arg("portcullis").arg(arg);
            c
        }
        CommandLine::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(argv[1..].iter().map(|a| a.replace(TOKEN, arg)));
            c
        }
    };
    c.env("PORTCULLIS_IP", arg);
    c
}

/// The values fwknop's `CMD_CYCLE_OPEN`/`CLOSE` may refer to. Every one is formatted
/// here from a parsed address or number: no text from the packet reaches a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwknopVars {
    /// `$IP` and `$SRC`: the address being let in (the SPA allow IP).
    pub ip: IpAddr,
    /// `$PKT_SRC`: the packet's source address.
    pub pkt_src: IpAddr,
    /// `$DST`: the packet's destination address (`0.0.0.0` when unknown).
    pub dst: Option<IpAddr>,
    /// `$PORT`.
    pub port: u16,
    /// `$PROTO`: `tcp` or `udp`.
    pub proto: portcullis_proto::Proto,
    /// `$TIMEOUT`: seconds.
    pub timeout: u64,
}

impl FwknopVars {
    fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "IP" | "SRC" => self.ip.to_string(),
            "PKT_SRC" => self.pkt_src.to_string(),
            "DST" => self.dst.map_or_else(|| "0.0.0.0".to_string(), |d| d.to_string()),
            "PORT" => self.port.to_string(),
            "PROTO" => self.proto.to_string(),
            "TIMEOUT" => self.timeout.to_string(),
            _ => return None,
        })
    }
}

/// An fwknop command template (already split into words, as fwknopd splits it) with
/// `$IP $SRC $PKT_SRC $DST $PORT $PROTO $TIMEOUT` replaced inside each word. The result
/// is an argv run without a shell, so a value can never become syntax; an unknown
/// `$NAME` is left as written.
pub fn fwknop_argv(template: &[String], vars: &FwknopVars) -> Vec<String> {
    template
        .iter()
        .map(|word| {
            let mut out = String::with_capacity(word.len());
            let mut rest = word.as_str();
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                let after = &rest[i + 1..];
                let end = after.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(after.len());
                match vars.get(&after[..end]) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('$');
                        out.push_str(&after[..end]);
                    }
                }
                rest = &after[end..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[test]
    fn rewrites_the_token_for_its_quoting_context() {
        assert_eq!(
            shell_script("/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT"),
            "/sbin/iptables -A INPUT -s \"${1}\" -p tcp --dport 22 -j ACCEPT"
        );
        assert_eq!(shell_script("echo \"from %IP%.\""), "echo \"from ${1}.\"");
        assert_eq!(shell_script("echo 'from %IP%.'"), "echo 'from '\"${1}\"'.'");
        assert_eq!(shell_script("echo \\'%IP%"), "echo \\'\"${1}\"");
        assert_eq!(shell_script("a%IP%%IP%b"), "a\"${1}\"\"${1}\"b");
        assert_eq!(shell_script("no token, ünïcode %IP"), "no token, ünïcode %IP");
    }

    /// Run `cmd` with `arg` as the address and return what `printf` wrote.
    fn output_of(cmd: &str, arg: &str) -> String {
        let out = command_with_arg(&CommandLine::Shell(cmd.into()), arg)
            .stdin(Stdio::null())
            .output()
            .expect("run /bin/sh");
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_addresses_are_one_literal_argument() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let p = pwned.display();
        let hostile = [
            format!("1.2.3.4; touch {p}"),
            format!("$(touch {p})"),
            format!("`touch {p}`"),
            format!("1.2.3.4' ; touch {p} ; '"),
            format!("1.2.3.4\" ; touch {p} ; \""),
            format!("1.2.3.4\ntouch {p}"),
            format!("a b  c * ? [x] ~ {{a,b}} $HOME ${{IFS}} && touch {p} || touch {p} | touch {p} > {p}"),
            "-rf /".to_string(),
        ];
        // printf '<%s>' shows how many arguments arrived and their exact bytes.
        let shapes = [
            ("printf '<%s>' %IP%", "<{}>"),
            ("printf '<%s>' \"%IP%\"", "<{}>"),
            ("printf '<%s>' \"x%IP%y\"", "<x{}y>"),
            ("printf '<%s>' '%IP%'", "<{}>"),
            ("printf '<%s>' 'x%IP%y'", "<x{}y>"),
            ("printf '<%s>' x%IP%y", "<x{}y>"),
        ];
        for h in &hostile {
            for (cmd, shape) in shapes {
                assert_eq!(output_of(cmd, h), shape.replace("{}", h), "{cmd} with {h:?}");
            }
            // Without a shell, an argv element gets exactly the text too.
            let argv = CommandLine::Argv(vec!["/usr/bin/printf".into(), "<%s>".into(), "-%IP%-".into()]);
            let out = command_with_arg(&argv, h).output().unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("<-{h}->"));
            // And the environment.
            assert_eq!(output_of("printf '<%s>' \"$PORTCULLIS_IP\"", h), format!("<{h}>"));
        }
        assert!(!pwned.exists(), "a hostile value was interpreted by the shell");
    }

    #[test]
    fn fwknop_variables_become_words_of_an_argv() {
        let v = FwknopVars {
            ip: "192.0.2.9".parse().unwrap(),
            pkt_src: "192.0.2.2".parse().unwrap(),
            dst: Some("192.0.2.1".parse().unwrap()),
            port: 22,
            proto: portcullis_proto::Proto::Tcp,
            timeout: 30,
        };
        let t: Vec<String> = [
            "/usr/sbin/nft",
            "add",
            "element",
            "inet",
            "f",
            "allow",
            "{",
            "$SRC",
            ".",
            "$PORT",
            "}",
            "$PKT_SRC->$DST:$PROTO/$PORT,$TIMEOUT,$IP,$NOPE,$",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = fwknop_argv(&t, &v);
        assert_eq!(a[7], "192.0.2.9");
        assert_eq!(a[9], "22");
        assert_eq!(a[11], "192.0.2.2->192.0.2.1:tcp/22,30,192.0.2.9,$NOPE,$");
        // Run without a shell: a word with shell syntax stays one literal argument.
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let t =
            vec!["/usr/bin/printf".to_string(), "<%s>".to_string(), format!("$IP;touch {}", pwned.display())];
        let out = command(&CommandLine::Argv(fwknop_argv(&t, &v)), v.ip).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("<192.0.2.9;touch {}>", pwned.display()));
        assert!(!pwned.exists());
    }

    #[test]
    fn real_addresses_round_trip() {
        for a in ["192.0.2.2", "2001:db8::2", "::ffff:192.0.2.2"] {
            let ip: IpAddr = a.parse().unwrap();
            let out = command(&CommandLine::Shell("printf %s %IP%".into()), ip).output().unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), ip.to_string());
        }
    }
}
