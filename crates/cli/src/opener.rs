//! What `open` and `connect` do before connecting: knock a fixed or rotating sequence,
//! or send an SPA packet, chosen by flags or by a client profile. SPA packets are built
//! by `portcullis spa` itself (same options, same code), so a profile behaves exactly
//! like the equivalent `portcullis spa` command line.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser};
use portcullis_proto::rotate::Rotation;
use portcullis_proto::Service;

use crate::knock::{hit, parse_knocks};
use crate::profile::{resolve_path, KnockSpec, MethodName, Profile, Profiles};
use crate::rotating::{now_unix, RotatingOpts};
use crate::{secretfile, spa};

/// Ways to open a server, shared by `open` and `connect`. Without any, the client
/// profile of the host is used.
#[derive(Args, Debug, Default)]
pub struct OpenArgs {
    /// Client profiles (default $XDG_CONFIG_HOME/portcullis/client.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use this profile instead of the one named (or aliased) HOST.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Knock this fixed sequence: 7000,8000:udp,9000.
    #[arg(long, value_name = "PORT[:PROTO],...")]
    pub knock: Option<String>,
    /// Knock the current sequence of a rotating door (--algorithm, --secret-file, ...).
    #[arg(long)]
    pub rotating: bool,
    #[command(flatten)]
    pub rot: RotatingOpts,
    /// Milliseconds between knocks.
    #[arg(long, value_name = "MS")]
    pub delay: Option<u64>,
    /// Send an fwknop SPA packet with the keys of this fwknop rc stanza.
    #[arg(long, value_name = "STANZA")]
    pub spa_fwknop: Option<String>,
    /// The fwknop rc file for --spa-fwknop (default ~/.fwknoprc; must be 0600).
    #[arg(long, value_name = "FILE")]
    pub fwknop_rc: Option<PathBuf>,
    /// Send a native portcullis SPA packet (--server-key, --user-key).
    #[arg(long)]
    pub spa_native: bool,
    /// Native SPA: the server's public key (pcs1-pub-...).
    #[arg(long, value_name = "KEY")]
    pub server_key: Option<String>,
    /// Native SPA: your user secret key file (0600).
    #[arg(long, value_name = "FILE")]
    pub user_key: Option<PathBuf>,
    /// SPA: services to ask for, tcp/22,udp/53 (connect: default tcp/PORT).
    #[arg(long = "open", value_name = "PROTO/PORT,...")]
    pub open: Option<String>,
    /// SPA: the server's UDP port (default 62201).
    #[arg(long, value_name = "PORT")]
    pub spa_port: Option<u16>,
}

/// Where fwknop keys come from.
#[derive(Debug)]
pub enum FwknopKeys {
    /// A stanza of an rc file (None: ~/.fwknoprc).
    Stanza { rc: Option<PathBuf>, name: String },
    /// A `portcullis keygen --out` file: `KEY_BASE64: ...` and `HMAC_KEY_BASE64: ...`.
    KeyFile(PathBuf),
}

/// How to open.
#[derive(Debug)]
pub enum Method {
    /// Connect directly.
    None,
    /// A fixed knock sequence.
    Knock(Vec<Service>),
    /// A rotating sequence, computed when it is sent.
    Rotating(Rotation),
    /// fwknop SPA.
    SpaFwknop(FwknopKeys),
    /// Native SPA.
    SpaNative { server_key: String, user_key: PathBuf },
}

/// Everything `open`/`connect` needs, from flags or a profile.
#[derive(Debug)]
pub struct Plan {
    /// The profile used, if any.
    pub profile: Option<String>,
    /// Host name or address to open and connect to.
    pub address: String,
    /// How.
    pub method: Method,
    /// Between knocks.
    pub delay: Duration,
    /// SPA: what to ask for (None: the caller's default).
    pub open: Option<Vec<Service>>,
    /// SPA: server port.
    pub spa_port: Option<u16>,
    /// connect: how long to keep trying (from the profile).
    pub wait: Option<Duration>,
}

/// A duration like `5s`, `1500ms`, bounded to 100 ms .. 10 min.
pub fn parse_wait(s: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("wait {s:?} is not a duration: {e}"))?;
    if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&d) {
        bail!("wait {s:?} must be between 100ms and 10m");
    }
    Ok(d)
}

impl OpenArgs {
    fn methods_given(&self) -> usize {
        [self.knock.is_some(), self.rotating, self.spa_fwknop.is_some(), self.spa_native]
            .iter()
            .filter(|&&b| b)
            .count()
    }

    /// Decide how to open `host`: from flags if any, else from its profile.
    pub fn plan(&self, host: &str) -> anyhow::Result<Plan> {
        if !self.rotating && self.rot.any() {
            bail!("--algorithm, --secret-file, --range, ... need --rotating");
        }
        match self.methods_given() {
            0 => self.plan_from_profile(host),
            1 if self.profile.is_some() => bail!("--profile and a method flag: give one or the other"),
            1 => self.plan_from_flags(host),
            _ => bail!("give only one of --knock, --rotating, --spa-fwknop, --spa-native"),
        }
    }

    fn plan_from_flags(&self, host: &str) -> anyhow::Result<Plan> {
        let method = if let Some(k) = &self.knock {
            let list: Vec<String> = k.split(',').map(|s| s.trim().to_string()).collect();
            Method::Knock(parse_knocks(&list, false)?)
        } else if self.rotating {
            Method::Rotating(self.rot.rotation()?)
        } else if let Some(name) = &self.spa_fwknop {
            Method::SpaFwknop(FwknopKeys::Stanza { rc: self.fwknop_rc.clone(), name: name.clone() })
        } else {
            Method::SpaNative {
                server_key: self
                    .server_key
                    .clone()
                    .context("--spa-native needs --server-key pcs1-pub-...")?,
                user_key: self.user_key.clone().context("--spa-native needs --user-key FILE")?,
            }
        };
        Ok(Plan {
            profile: None,
            address: host.to_string(),
            method,
            delay: Duration::from_millis(self.delay.unwrap_or(0)),
            open: self.open.as_deref().map(spa::parse_access).transpose()?,
            spa_port: self.spa_port,
            wait: None,
        })
    }

    fn plan_from_profile(&self, host: &str) -> anyhow::Result<Plan> {
        let profiles = Profiles::load(self.config.as_deref())?;
        let (name, p) = match &self.profile {
            Some(n) => profiles.get(n)?,
            None => profiles.find(host).with_context(|| {
                format!(
                    "no way to open {host:?}: no [host.{host:?}] profile (or alias) in {}, and none of \
                     --knock, --rotating, --spa-fwknop, --spa-native given",
                    profiles.path.display()
                )
            })?,
        };
        let ctx = || format!("profile {name:?} in {}", profiles.path.display());
        let method = profile_method(p, &profiles.base()).with_context(ctx)?;
        Ok(Plan {
            profile: Some(name.to_string()),
            address: p.address.clone().unwrap_or_else(|| name.to_string()),
            method,
            delay: Duration::from_millis(self.delay.or(p.delay_ms).unwrap_or(0)),
            open: match (&self.open, &p.open) {
                (Some(o), _) => Some(spa::parse_access(o)?),
                (None, Some(list)) => Some(spa::parse_access(&list.join(",")).with_context(ctx)?),
                (None, None) => None,
            },
            spa_port: self.spa_port.or(p.spa_port),
            wait: p.wait.as_deref().map(parse_wait).transpose().with_context(ctx)?,
        })
    }
}

fn profile_method(p: &Profile, base: &Path) -> anyhow::Result<Method> {
    Ok(match p.method {
        MethodName::None => Method::None,
        MethodName::Knock => {
            let seq: Vec<String> = p
                .sequence
                .as_ref()
                .context("method \"knock\" needs sequence = [...]")?
                .iter()
                .map(KnockSpec::text)
                .collect();
            if seq.is_empty() {
                bail!("sequence is empty");
            }
            Method::Knock(parse_knocks(&seq, false)?)
        }
        MethodName::Rotating => Method::Rotating(p.rotating(base).rotation()?),
        MethodName::SpaFwknop => match (&p.fwknop_stanza, &p.fwknop_keys) {
            (Some(name), None) => FwknopKeys::Stanza {
                rc: p.fwknop_rc.as_deref().map(|r| resolve_path(r, base)),
                name: name.clone(),
            }
            .into(),
            (None, Some(f)) => FwknopKeys::KeyFile(resolve_path(f, base)).into(),
            _ => bail!("method \"spa-fwknop\" needs exactly one of fwknop_stanza, fwknop_keys"),
        },
        MethodName::SpaNative => Method::SpaNative {
            server_key: p.server_key.clone().context("method \"spa-native\" needs server_key")?,
            user_key: resolve_path(
                p.user_key_file.as_deref().context("method \"spa-native\" needs user_key_file")?,
                base,
            ),
        },
    })
}

impl From<FwknopKeys> for Method {
    fn from(k: FwknopKeys) -> Method {
        Method::SpaFwknop(k)
    }
}

/// `portcullis spa` as a library call: the same options, parsed by the same code.
#[derive(Parser)]
#[command(name = "spa")]
struct SpaCommand {
    #[command(flatten)]
    args: spa::SpaArgs,
}

/// Read a `portcullis keygen --out` fwknop key file (`KEY_BASE64: ...`, `HMAC_KEY_BASE64: ...`;
/// the rc spelling without the colon works too).
fn read_fwknop_keys(path: &Path) -> anyhow::Result<(String, Option<String>)> {
    let bytes = secretfile::read_secret(path)?;
    let text = std::str::from_utf8(&bytes).with_context(|| format!("{} is not text", path.display()))?;
    let (mut key, mut hmac) = (None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (k, v) = line.split_once(|c: char| c == ':' || c.is_ascii_whitespace()).unwrap_or((line, ""));
        match k {
            "KEY_BASE64" => key = Some(v.trim().to_string()),
            "HMAC_KEY_BASE64" => hmac = Some(v.trim().to_string()),
            _ => bail!("{}: unexpected line (want KEY_BASE64 and HMAC_KEY_BASE64)", path.display()),
        }
    }
    Ok((key.with_context(|| format!("{} has no KEY_BASE64", path.display()))?, hmac))
}

fn spa_argv(plan: &Plan, ip: IpAddr, open: &[Service]) -> anyhow::Result<Vec<String>> {
    let mut argv: Vec<String> = vec!["spa".into(), "-D".into(), ip.to_string()];
    if !open.is_empty() {
        let list: Vec<String> = open.iter().map(ToString::to_string).collect();
        argv.extend(["-A".into(), list.join(",")]);
    }
    if let Some(p) = plan.spa_port {
        argv.extend(["-p".into(), p.to_string()]);
    }
    match &plan.method {
        Method::SpaFwknop(FwknopKeys::Stanza { rc, name }) => {
            let rc = match rc {
                Some(r) => r.clone(),
                None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".fwknoprc"),
            };
            secretfile::open_secret(&rc)?;
            argv.extend(["--rc-file".into(), rc.display().to_string(), "-n".into(), name.clone()]);
        }
        Method::SpaFwknop(FwknopKeys::KeyFile(path)) => {
            let (key, hmac) = read_fwknop_keys(path)?;
            argv.extend(["--key-base64-rijndael".into(), key]);
            if let Some(h) = hmac {
                argv.extend(["--key-base64-hmac".into(), h]);
            }
        }
        Method::SpaNative { server_key, user_key } => {
            secretfile::open_secret(user_key)?;
            argv.extend([
                "--native".into(),
                "--server-key".into(),
                server_key.clone(),
                "--user-key".into(),
                user_key.display().to_string(),
            ]);
        }
        _ => bail!("not an SPA method"),
    }
    Ok(argv)
}

/// Send the knocks, or the SPA packet, to `ip`. `open_default` is what SPA asks for when
/// neither flags nor profile say (connect: tcp/PORT). Nothing is printed on stdout.
pub fn execute(plan: &Plan, ip: IpAddr, open_default: &[Service]) -> anyhow::Result<()> {
    let knocks = match &plan.method {
        Method::None => return Ok(()),
        Method::Knock(k) => k.clone(),
        Method::Rotating(r) => r.sequence_at(now_unix()?),
        Method::SpaFwknop(_) | Method::SpaNative { .. } => {
            let open = plan.open.as_deref().unwrap_or(open_default);
            let argv = spa_argv(plan, ip, open)?;
            let cmd = SpaCommand::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("SPA options: {e}"))?;
            return spa::run(&cmd.args);
        }
    };
    for (i, k) in knocks.iter().enumerate() {
        if i > 0 && !plan.delay.is_zero() {
            std::thread::sleep(plan.delay);
        }
        hit(SocketAddr::new(ip, k.port), k.proto).with_context(|| format!("knock {k} on {ip}"))?;
    }
    Ok(())
}

/// Arguments of `portcullis open`.
#[derive(Args, Debug)]
pub struct OpenCmdArgs {
    #[command(flatten)]
    how: OpenArgs,
    /// Say what was sent (on stderr).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Profile name, alias, or (with method flags) host to open.
    host: String,
}

/// Run `portcullis open`.
pub fn run_open(a: &OpenCmdArgs) -> anyhow::Result<()> {
    let plan = a.how.plan(&a.host)?;
    let ip = crate::knock::resolve(&plan.address, false, false)?;
    execute(&plan, ip, &[])?;
    if a.verbose {
        eprintln!(
            "opened {} ({ip}) by {}",
            plan.profile.as_deref().unwrap_or(&plan.address),
            describe(&plan.method)
        );
    }
    Ok(())
}

/// The method in a few words, never with a secret.
pub fn describe(m: &Method) -> &'static str {
    match m {
        Method::None => "nothing (direct connection)",
        Method::Knock(_) => "knocking",
        Method::Rotating(_) => "knocking the rotating sequence",
        Method::SpaFwknop(_) => "fwknop SPA",
        Method::SpaNative { .. } => "native SPA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn flags_choose_one_method() {
        let a = OpenArgs { knock: Some("7000, 8000:udp,9000".into()), ..Default::default() };
        let p = a.plan("h").unwrap();
        assert!(
            matches!(&p.method, Method::Knock(k) if k == &[Service::tcp(7000), Service::udp(8000), Service::tcp(9000)])
        );
        assert_eq!(p.address, "h");
        let a = OpenArgs { knock: Some("7000".into()), spa_native: true, ..Default::default() };
        assert!(a.plan("h").unwrap_err().to_string().contains("only one of"));
        let a = OpenArgs { knock: Some("70000".into()), ..Default::default() };
        assert!(a.plan("h").unwrap_err().to_string().contains("bad knock"));
        let a = OpenArgs { rot: RotatingOpts { count: Some(3), ..Default::default() }, ..Default::default() };
        assert!(a.plan("h").unwrap_err().to_string().contains("need --rotating"));
    }

    #[test]
    fn profiles_supply_the_method_and_unknown_hosts_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "rot.secret", "f00b4r\n", 0o600);
        write(d.path(), "loose.secret", "f00b4r\n", 0o644);
        let conf = write(
            d.path(),
            "client.toml",
            "[host.web]\naddress = \"192.0.2.1\"\nmethod = \"rotating\"\nalgorithm = \"md5-hourly\"\n\
             secret_file = \"rot.secret\"\nrange = \"10000-10999\"\ncount = 5\nwait = \"2s\"\n\
             [host.loose]\nmethod = \"rotating\"\nalgorithm = \"md5-hourly\"\nsecret_file = \"loose.secret\"\n\
             range = \"10000-10999\"\ncount = 5\n",
            0o644,
        );
        let a = OpenArgs { config: Some(conf.clone()), ..Default::default() };
        let p = a.plan("web").unwrap();
        assert_eq!(p.address, "192.0.2.1");
        assert_eq!(p.wait, Some(Duration::from_secs(2)));
        let Method::Rotating(r) = &p.method else { panic!("{:?}", p.method) };
        assert_eq!(r.sequence_at(1_219_168_752)[0], Service::tcp(10978));
        // Found by its address too (what ssh passes as %h after HostName).
        assert_eq!(a.plan("192.0.2.1").unwrap().profile.as_deref(), Some("web"));
        let e = format!("{:#}", a.plan("loose").unwrap_err());
        assert!(e.contains("chmod 600") && !e.contains("f00b4r"), "{e}");
        let e = format!("{:#}", a.plan("elsewhere").unwrap_err());
        assert!(e.contains("no way to open \"elsewhere\"") && e.contains("client.toml"), "{e}");
        let a = OpenArgs { config: Some(conf), profile: Some("nope".into()), ..Default::default() };
        assert!(format!("{:#}", a.plan("web").unwrap_err()).contains("no profile \"nope\""));
    }

    #[test]
    fn spa_profiles_become_spa_command_lines() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "fw.keys", "KEY_BASE64: a2V5\nHMAC_KEY_BASE64: aG1hYw==\n", 0o600);
        let conf = write(
            d.path(),
            "client.toml",
            "[host.fw]\nmethod = \"spa-fwknop\"\nfwknop_keys = \"fw.keys\"\nspa_port = 62202\n",
            0o600,
        );
        let a = OpenArgs { config: Some(conf), ..Default::default() };
        let plan = a.plan("fw").unwrap();
        let argv = spa_argv(&plan, "192.0.2.1".parse().unwrap(), &[Service::tcp(22)]).unwrap();
        assert_eq!(
            argv,
            [
                "spa",
                "-D",
                "192.0.2.1",
                "-A",
                "tcp/22",
                "-p",
                "62202",
                "--key-base64-rijndael",
                "a2V5",
                "--key-base64-hmac",
                "aG1hYw=="
            ]
        );
        assert!(SpaCommand::try_parse_from(&argv).is_ok());
        write(d.path(), "bad.keys", "KEY: x\n", 0o600);
        assert!(read_fwknop_keys(&d.path().join("bad.keys")).is_err());
    }

    #[test]
    fn waits_are_bounded() {
        assert_eq!(parse_wait("5s").unwrap(), Duration::from_secs(5));
        assert!(parse_wait("10ms").is_err());
        assert!(parse_wait("1h").is_err());
        assert!(parse_wait("soon").is_err());
    }
}
