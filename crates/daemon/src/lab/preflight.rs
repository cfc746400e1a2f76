//! What a privileged test checks before it runs: root, and the tools it drives.
//!
//! A privileged test that cannot run proves nothing, so it must not pass quietly.
//! Under CI (`CI=true` in the environment) it fails with its reason; on a developer's
//! machine it prints a loud SKIPPED line and the test returns early.

use std::fmt::Display;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where [`find_tool`] looks: Debian's `PATH` for root, in order.
const TOOL_DIRS: [&str; 5] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"];

/// True under CI: `CI` is `true` or `1` (GitHub Actions, GitLab CI and most others set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Test `test` cannot run, because of `reason`. Under CI this panics, failing the
/// test with the reason. Elsewhere it prints SKIPPED with the reason and returns; the
/// caller then returns without testing anything.
pub fn cannot_run(test: &str, reason: impl Display) {
    if under_ci() {
        panic!("{test} cannot run: {reason} (CI=true: a privileged test that cannot run fails)");
    }
    // Straight to the process's stderr, not `eprintln!`: libtest captures the latter and
    // shows it only for failing tests, which would make the skip silent.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {reason} (under CI=true this fails) ***\n");
}

/// True if we are root. Otherwise reports [`cannot_run`] for `test` (a panic under CI)
/// and returns false: `if !root_or_skip("name") { return; }`.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    cannot_run(test, "needs root (network namespaces and their firewalls)");
    false
}

/// Path of an installed program, looked up in the usual system directories (tests and
/// the bench do not trust `PATH`, which differs between sudo, CI and login shells).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    TOOL_DIRS.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}
