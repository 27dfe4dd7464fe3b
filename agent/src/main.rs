//! `agent`: parse the command line and hand over. Nothing else lives here.
mod activity;
mod cli;
mod decode;
mod demo;
mod error;
mod human;
mod kmaps;
mod ledger;
mod loader;
mod maps;
mod output;
mod procinfo;
mod reconcile;
mod record;
mod ring;
mod rss_trace;
mod smaps;
mod spawn;
mod stacks;
mod tracefs;
mod verdict;
mod watch;
mod workload;

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    let cli = cli::Cli::parse();
    let code = match cli.cmd {
        cli::Cmd::Watch(args) => match watch::run(args) {
            Ok(code) => code,
            Err(e) => {
                let code = e.downcast_ref::<error::AgentError>().map_or(1, error::AgentError::exit_code);
                eprintln!("agent: {e:#}");
                code
            }
        },
        cli::Cmd::Demo(args) => demo::run(args),
        cli::Cmd::Floor { bpf_stats } => match loader::load(true, false) {
            Ok(loaded) => {
                let stats = bpf_stats.then(loader::enable_stats);
                println!("attached: {}", loaded.hooks.join(","));
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
                if stats.is_some() {
                    println!("{}", serde_json::json!({ "programs": loader::program_stats(&loaded.ebpf) }));
                }
                0
            }
            Err(e) => {
                eprintln!("agent: {e}");
                e.exit_code()
            }
        },
        cli::Cmd::Workload(w) => workload::run(w),
    };
    std::process::exit(code);
}
