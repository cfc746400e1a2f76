//! What a run produces: tables, target verdicts, and the machine it ran on.

use std::process::Command;

use crate::table::{verdict, Table};

/// A target from the brief, evaluated.
#[derive(Debug, Clone)]
pub struct Check {
    /// The target, as stated.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met or not.
    pub ok: bool,
}

/// Everything a run prints.
#[derive(Debug, Default)]
pub struct Report {
    /// One table per scenario (some scenarios have two).
    pub tables: Vec<Table>,
    /// Target verdicts.
    pub checks: Vec<Check>,
    /// Busy fraction of the machine (other processes) seen right before each measured case.
    pub background: Vec<f64>,
}

impl Report {
    /// Record a verdict.
    pub fn check(&mut self, target: &str, measured: String, ok: bool) {
        self.checks.push(Check { target: target.to_string(), measured, ok });
    }

    /// Before a measured case: wait (bounded) for the shared machine to be quiet, and
    /// remember how busy it was.
    pub fn settle(&mut self) {
        self.background.push(crate::procmon::wait_quiet(std::time::Duration::from_secs(20)));
    }

    /// One line on background load.
    pub fn background_line(&self) -> String {
        let mut v = self.background.clone();
        v.sort_by(f64::total_cmp);
        match (v.get(v.len() / 2), v.last()) {
            (Some(m), Some(x)) => format!(
                "- background CPU load of this (shared) machine right before each case, after waiting up to 20 s \
                 for < 15 %: median {:.0} %, max {:.0} % of both cores\n",
                m * 100.0,
                x * 100.0
            ),
            _ => String::new(),
        }
    }

    /// The targets table.
    pub fn checks_table(&self) -> Table {
        let mut t = Table::new("Targets", &["target", "measured", "verdict"]);
        for c in &self.checks {
            t.row(vec![c.target.clone(), c.measured.clone(), verdict(c.ok).into()]);
        }
        t
    }
}

fn cmd(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|_| "?".into())
}

/// Date, kernel, CPU, core count, tool versions: the header of a results file.
pub fn machine_header(mode: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or("?".into(), |k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0));
    let rev = cmd(&["git", "rev-parse", "--short", "HEAD"]);
    format!(
        "## portcullis benchmark — {date}\n\n\
         - machine: `uname -r` {kernel}; CPU {cpu}; nproc {nproc}; RAM {mem}\n\
         - versions: portcullis {rev}; {knockd}; fwknopd {fwknopd}; {nft}; {ipt}\n\
         - mode: {mode}\n",
        date = cmd(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        kernel = cmd(&["uname", "-r"]),
        nproc = cmd(&["nproc"]),
        knockd = cmd(&["knockd", "-V"]),
        fwknopd = cmd(&["fwknopd", "-V"]).replace("fwknopd server ", "").split(',').next().unwrap_or("?"),
        nft = cmd(&["nft", "-v"]),
        ipt = cmd(&["iptables", "-V"]),
    )
}
