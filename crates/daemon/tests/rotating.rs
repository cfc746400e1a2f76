//! Rotating doors in the daemon, end to end: sequences computed with `portcullis
//! sequence --at` and knocked with Debian's `knock`. The current and the previous
//! step's sequences open, an older one does not, and a sequence replayed from another
//! source in the same step is refused. Root required: as non-root these fail under
//! `CI=true`, and elsewhere print SKIPPED and return.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

/// Step length: short, but long enough for a knock and a probe inside one step on a
/// loaded machine.
const STEP: u64 = 4;

const SECRET: &str = "rotating integration secret\n";

fn config() -> String {
    format!(
        r#"
[[door]]
name = "rot"
rotating = {{ algorithm = "hmac-sha256", secret_file = "rot.secret", range = "30000-30999", count = 3, step = "{STEP}s" }}
seq_timeout = 5
open = ["tcp/2222"]
open_for = 30
"#
    )
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// Sleep until 100 ms into the next step; returns that step's start (Unix seconds).
fn start_of_next_step() -> u64 {
    let step_ms = u128::from(STEP) * 1000;
    let next = (now_ms() / step_ms + 1) * step_ms;
    std::thread::sleep(Duration::from_millis(u64::try_from(next + 100 - now_ms()).unwrap()));
    u64::try_from(next / 1000).unwrap()
}

/// `portcullis sequence` for the door at Unix time `at`.
fn sequence(s: &Server, at: u64) -> Vec<String> {
    let out = std::process::Command::new(client_bin())
        .args(["sequence", "--algorithm", "hmac-sha256", "--secret-file"])
        .arg(s.dir.join("rot.secret"))
        .args(["--range", "30000-30999", "--count", "3", "--step", &format!("{STEP}s")])
        .args(["--at", &format!("@{at}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "portcullis sequence: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

fn knock(s: &Server, ns: &str, dst: &str, seq: &[String]) {
    let knock = tool("knock");
    let mut args = vec![knock.as_str(), "-d", "50", dst];
    args.extend(seq.iter().map(String::as_str));
    run_ok(&s.lab, ns, &args);
}

/// Whether 2222 opens for `ns` within `limit`.
fn opens(s: &Server, ns: &str, dst: &str, limit: Duration) -> bool {
    wait_until(limit, || s.probe(ns, dst, 2222) == Probe::Open)
}

#[test]
fn rotating_door_opens_with_the_current_and_previous_step_only() {
    if !root_or_skip("rotating_door_opens_with_the_current_and_previous_step_only") {
        return;
    }
    let s = Server::start_with("rot", &config(), &[2222], &[("rot.secret", SECRET)]);
    let c = s.lab.client.clone();
    let o = s.lab.other.clone();

    // Older than the previous step: refused.
    let t = start_of_next_step();
    knock(&s, &c, lab::SERVER4, &sequence(&s, t - 2 * STEP));
    assert!(!opens(&s, &c, lab::SERVER4, Duration::from_millis(600)), "a sequence two steps old opened");

    // The previous step's sequence (a client whose clock is behind): opens.
    let t = start_of_next_step();
    knock(&s, &c, lab::SERVER4, &sequence(&s, t - STEP));
    assert!(opens(&s, &c, lab::SERVER4, Duration::from_secs(2)), "the previous step did not open");

    // The current step's sequence from the other host: opens for it. Replayed from the
    // client in the same step: refused, and the daemon says why.
    let t = start_of_next_step();
    let current = sequence(&s, t);
    knock(&s, &o, lab::SERVER4_OTHER, &current);
    assert!(opens(&s, &o, lab::SERVER4_OTHER, Duration::from_secs(2)), "the current step did not open");
    let before = s.log_text().matches("already used by").count();
    knock(&s, &c, lab::SERVER4, &current);
    s.wait_log("already used by", before + 1);
    assert!(
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / STEP == t / STEP,
        "the step ended before the replay was checked; rerun on a less loaded machine"
    );
    assert!(
        s.log_text().contains(&format!(
            "{}: rot: sequence of step {} already used by {}",
            lab::CLIENT4,
            t / STEP,
            lab::OTHER4
        )),
        "{}",
        s.log_text()
    );
}
