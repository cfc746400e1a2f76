//! `portcullisd demo`: the whole story in throwaway namespaces, each step checked.
//!
//! Exit status is 0 only if every step behaved as it should; the namespaces and
//! processes are removed whatever happens (the [`Lab`] drop guard).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::lab::{self, Lab, Probe};

const PORT: u16 = 2222;
const GRANT_SECS: u64 = 5;
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

fn config(state_dir: &str) -> String {
    format!(
        r#"# Written by `portcullisd demo`.
[daemon]
state_dir = "{state_dir}"

[[door]]
name = "demo"
sequence = [7000, "8000:udp", 9000]
seq_timeout = 5
open = ["tcp/{PORT}"]
open_for = {GRANT_SECS}
"#
    )
}

struct Steps {
    n: usize,
    failed: usize,
}

impl Steps {
    fn check(&mut self, what: &str, got: Probe, want: Probe) {
        self.n += 1;
        let ok = got == want;
        if !ok {
            self.failed += 1;
        }
        println!(
            "  [{}] {what}: {} (expected {}) {}",
            self.n,
            name(got),
            name(want),
            if ok { "ok" } else { "FAILED" }
        );
    }
}

fn name(p: Probe) -> &'static str {
    match p {
        Probe::Open => "open",
        Probe::Closed => "closed",
        Probe::Filtered => "filtered",
    }
}

/// Find the `portcullis` client next to this binary (cargo target dir, /usr/bin, ...).
fn client_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("portcullis");
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!(
        "the `portcullis` client binary is not next to {} (build both: cargo build --release)",
        exe.display()
    )
}

/// Run the demo.
pub fn demo(verbose: bool) -> anyhow::Result<ExitCode> {
    let client = client_binary()?;
    let daemon = std::env::current_exe()?;
    println!("portcullis demo: a server, a client and another host, each in its own network namespace.");
    let mut lab = Lab::new("demo")?;
    println!(
        "  server {} ({}), client {} ({}), other host {} ({})",
        lab.server,
        lab::SERVER4,
        lab.client,
        lab::CLIENT4,
        lab.other,
        lab::OTHER4
    );

    let dir = tempfile_dir()?;
    let conf = dir.join("demo.toml");
    std::fs::write(&conf, config(&dir.join("state").display().to_string()))?;
    println!("  door \"demo\": knock 7000/tcp, 8000/udp, 9000/tcp within 5 s -> opens tcp/{PORT} for {GRANT_SECS} s");

    // A service on the protected port, so "open" means a real handshake.
    let _listener = lab.in_ns(&lab.server, || TcpListener::bind(("0.0.0.0", PORT)))??;

    let (tx, rx) = mpsc::channel::<String>();
    let conf_s = conf.display().to_string();
    let daemon_s = daemon.display().to_string();
    let child = lab.spawn(
        &lab.server.clone(),
        &[&daemon_s, "run", "--config", &conf_s],
        Stdio::null(),
        Stdio::piped(),
    )?;
    let stderr = child.stderr.take().context("daemon stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_ready(&rx, verbose)?;
    println!("  daemon running in {} (nftables table inet portcullis installed)", lab.server);

    let srv: IpAddr = lab::SERVER4.parse()?;
    let srv_other: IpAddr = lab::SERVER4_OTHER.parse()?;
    let mut steps = Steps { n: 0, failed: 0 };
    let knock = |lab: &Lab, seq: &[&str]| -> anyhow::Result<()> {
        let mut args = vec![client.to_str().unwrap_or("portcullis"), "knock", "-d", "20", lab::SERVER4];
        args.extend_from_slice(seq);
        println!("  client$ portcullis knock -d 20 {} {}", lab::SERVER4, seq.join(" "));
        let out = lab.exec(&lab.client, &args)?;
        if !out.status.success() {
            bail!("knock failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };

    steps.check(
        "client -> tcp/2222 before knocking",
        lab.probe(&lab.client, srv, PORT, PROBE_TIMEOUT)?,
        Probe::Filtered,
    );
    knock(&lab, &["7000", "9000", "8000:udp"])?;
    drain(&rx, verbose);
    steps.check(
        "client -> tcp/2222 after a wrong sequence",
        lab.probe(&lab.client, srv, PORT, PROBE_TIMEOUT)?,
        Probe::Filtered,
    );
    knock(&lab, &["7000", "8000:udp", "9000"])?;
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    drain(&rx, verbose);
    steps.check(
        "client -> tcp/2222 after the right sequence",
        lab.probe(&lab.client, srv, PORT, PROBE_TIMEOUT)?,
        Probe::Open,
    );
    steps.check(
        "other host -> tcp/2222 (not the knocker)",
        lab.probe(&lab.other, srv_other, PORT, PROBE_TIMEOUT)?,
        Probe::Filtered,
    );

    println!("  waiting for the grant to expire ({GRANT_SECS} s, enforced by the kernel's set timeout)...");
    let mut closed_after = None;
    while opened.elapsed() < Duration::from_secs(GRANT_SECS + 3) {
        if lab.probe(&lab.client, srv, PORT, Duration::from_millis(200))? == Probe::Filtered {
            closed_after = Some(opened.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drain(&rx, verbose);
    match closed_after {
        Some(t) => println!("  grant closed {:.1} s after the knock", t.as_secs_f64()),
        None => println!("  grant did not close within {} s", GRANT_SECS + 3),
    }
    steps.check(
        "client -> tcp/2222 after expiry",
        lab.probe(&lab.client, srv, PORT, PROBE_TIMEOUT)?,
        Probe::Filtered,
    );
    let early =
        closed_after.is_some_and(|t| t < Duration::from_secs(GRANT_SECS) - Duration::from_millis(500));
    if early {
        println!("  grant closed too early");
        steps.failed += 1;
    }

    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    println!("  namespaces removed");
    let _ = std::io::stdout().flush();
    if steps.failed == 0 {
        println!("demo: all {} checks behaved as expected", steps.n);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo: {} of {} checks FAILED", steps.failed, steps.n);
        Ok(ExitCode::from(1))
    }
}

fn wait_ready(rx: &mpsc::Receiver<String>, verbose: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                if verbose {
                    println!("    | {line}");
                }
                let ready = line.contains("ready:");
                seen.push(line);
                if ready {
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("daemon exited:\n{}", seen.join("\n")),
        }
    }
    bail!("daemon did not become ready:\n{}", seen.join("\n"))
}

fn drain(rx: &mpsc::Receiver<String>, verbose: bool) {
    std::thread::sleep(Duration::from_millis(30));
    while let Ok(line) = rx.try_recv() {
        if verbose {
            println!("    | {line}");
        }
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
