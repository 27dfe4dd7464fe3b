//! The cost floor: the do-nothing program on exactly the agent's tracepoints, held until stdin
//! closes. What the hooks cost before any agent logic runs.
use agent::kernel::loader;

pub fn run(bpf_stats: bool) -> i32 {
    match loader::load_floor() {
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
            eprintln!("workloads floor: {e}");
            e.exit_code()
        }
    }
}
