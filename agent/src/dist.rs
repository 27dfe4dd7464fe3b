//! `agent dist --out DIR` (hidden; `cargo xtask dist` runs it): shell completions (clap_complete)
//! and man pages (clap_mangen) generated from the agent's own clap definitions, so they never
//! drift from the command line.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

#[derive(clap::Args, Debug)]
pub struct DistArgs {
    /// Directory to write `completions/` and `man/` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: DistArgs) -> anyhow::Result<i32> {
    let cmd = crate::cli::Cli::command();
    let completions = args.out.join("completions");
    std::fs::create_dir_all(&completions).with_context(|| format!("cannot create {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "agent", &completions)
            .with_context(|| format!("cannot write {shell} completions into {}", completions.display()))?;
    }
    let man = args.out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    write_man(&cmd, "agent", &man)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("agent-{}", sub.get_name());
        // Its page is `agent-NAME(1)`, named so in its NAME section too (a one-shot command:
        // the name is leaked on purpose).
        let named = sub.clone().name(&*Box::leak(name.clone().into_boxed_str()));
        write_man(&named, &name, &man)?;
    }
    Ok(0)
}

fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(name.to_uppercase()).render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))
}
