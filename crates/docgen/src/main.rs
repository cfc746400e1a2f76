//! `portcullis-docgen --out DIR`: man pages and shell completions for `portcullisd` and
//! `portcullis`, generated from the clap definitions the binaries parse. A build tool
//! (scripts/package.sh runs it); it is not installed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;

/// Command line of the generator itself.
#[derive(Parser)]
#[command(name = "portcullis-docgen", about = "Generate man pages and shell completions")]
struct Opts {
    /// Output directory; man/ and completions/{bash,zsh,fish}/ are created inside.
    #[arg(long)]
    out: PathBuf,
    /// Date printed in the man page footer (YYYY-MM-DD), e.g. the last commit's.
    #[arg(long, default_value = "")]
    date: String,
}

fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let written = generate(&o.out, &o.date)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

/// The two programs: command definition, man section.
fn programs() -> [(clap::Command, &'static str); 2] {
    [(portcullis_daemon::args::Args::command(), "8"), (portcullis_cli::args::Args::command(), "1")]
}

/// Write every man page and completion file under `out`; returns their paths.
fn generate(out: &Path, date: &str) -> anyhow::Result<Vec<PathBuf>> {
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    let mut written = Vec::new();
    for (cmd, section) in programs() {
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        man_pages(&cmd, section, date, &man, &mut written)?;
        let name = cmd.get_name().to_string();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let p = clap_complete::generate_to(shell, &mut cmd, &name, &dir)
                .with_context(|| format!("writing {shell} completion for {name}"))?;
            written.push(p);
        }
    }
    Ok(written)
}

/// One page for `cmd` and one per (nested) subcommand: `portcullis-grants-list.1`.
fn man_pages(
    cmd: &clap::Command,
    section: &str,
    date: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, section, date, dir, written)?;
    }
    let source = format!("portcullis {}", env!("CARGO_PKG_VERSION"));
    let page =
        clap_mangen::Man::new(cmd.clone()).section(section).date(date).source(source).manual("portcullis");
    let p = page.generate_to(dir).with_context(|| format!("writing the man page of {}", cmd.get_name()))?;
    written.push(p);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_page_per_subcommand_and_three_completions_per_program() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(dir.path(), "2026-11-30").unwrap();
        let name = |p: &PathBuf| p.strip_prefix(dir.path()).unwrap().display().to_string();
        let names: Vec<String> = written.iter().map(name).collect();
        for want in [
            "man/portcullisd.8",
            "man/portcullisd-run.8",
            "man/portcullisd-gate.8",
            "man/portcullisd-teardown.8",
            "man/portcullis.1",
            "man/portcullis-knock.1",
            "man/portcullis-grants-list.1",
            "completions/bash/portcullisd.bash",
            "completions/zsh/_portcullis",
            "completions/fish/portcullis.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let page = std::fs::read_to_string(dir.path().join("man/portcullisd.8")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq \\(aq") || page.contains(".TH portcullisd 8"), "{page}");
        assert!(page.contains("2026\\-11\\-30") || page.contains("2026-11-30"), "date missing:\n{page}");
        assert!(page.contains("gate"), "subcommand list missing:\n{page}");
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/portcullis.bash")).unwrap();
        assert!(bash.contains("knock") && bash.contains("keygen"), "{bash}");
    }
}
