//! `agent`: parse the command line and hand over to the library. Nothing else lives here.
use agent::{cli, demo, dist, error::AgentError, serve, snapshot, watch};
use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    let code = match cli::Cli::parse().cmd {
        cli::Cmd::Watch(args) => report(watch::run(args)),
        cli::Cmd::Snapshot(args) => report(snapshot::run(args)),
        cli::Cmd::Diff(args) => report(snapshot::diff(args)),
        cli::Cmd::Demo(args) => demo::run(args),
        cli::Cmd::Serve(args) => report(serve::run(args)),
        cli::Cmd::Dist(args) => report(dist::run(args)),
        cli::Cmd::Symbolizer { fd } => agent::stacks::sandbox::run(fd),
        cli::Cmd::FuzzSymbolizer(args) => report(agent::stacks::fuzz::run(args)),
    };
    std::process::exit(code);
}

/// The exit code of a command; an error is one line on stderr.
fn report(r: anyhow::Result<i32>) -> i32 {
    r.unwrap_or_else(|e| {
        eprintln!("agent: {e:#}");
        e.downcast_ref::<AgentError>().map_or(1, AgentError::exit_code)
    })
}
