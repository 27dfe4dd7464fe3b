//! Targets: what to watch. Today a pid tree (`-p PID`) or a command the agent spawns
//! (`-- CMD ARGS`); each puts its processes in the kernel's watched set and the ledger, after
//! which the kernel follows their forks itself.
pub mod cgroup;
pub mod cgroup_labels;
pub mod cgroup_watch;
pub mod spawn;

use crate::{attribution::Ledger, error::AgentError, kernel::bpf_maps::BpfMaps, proc_facts};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// This process and all its descendants, existing and future.
    Tree(i32),
    /// Spawn this command (argv) and watch its tree.
    Command(Vec<String>),
}

/// The watched set once the targets are in it.
pub struct Started {
    pub pids: Vec<u32>,
    /// The spawned command, whose exit status becomes the agent's.
    pub child: Option<u32>,
}

impl Target {
    pub fn from_args(pid: Option<i32>, cmd: &[String]) -> anyhow::Result<Target> {
        match (pid, cmd) {
            (Some(pid), _) => Ok(Target::Tree(pid)),
            (None, [_, ..]) => Ok(Target::Command(cmd.to_vec())),
            (None, []) => anyhow::bail!("nothing to watch: give `-p PID`, `--cgroup PATH` or `-- CMD ARGS`"),
        }
    }

    /// Refuse what cannot be watched before anything is loaded, as a shell would.
    pub fn check(&self) -> Result<(), AgentError> {
        match self {
            Target::Tree(pid) if !proc_facts::exists(*pid) => Err(AgentError::NoSuchProcess(*pid)),
            Target::Tree(_) => Ok(()),
            Target::Command(argv) => spawn::resolve(&argv[0]).map(drop),
        }
    }

    /// Put the target's processes in the watched set: the kernel's and the ledger's. With
    /// `stdout_to_stderr`, a spawned command writes its stdout to the agent's stderr.
    pub fn start(&self, ledger: &mut Ledger, bpf: &mut BpfMaps, stdout_to_stderr: bool) -> anyhow::Result<Started> {
        match self {
            Target::Tree(root) => {
                let mut pids = Vec::new();
                // Twice: a child forked between the scan and the map update is caught the second
                // time (after it, the kernel follows forks itself).
                for _ in 0..2 {
                    for pid in proc_facts::tree(*root as u32) {
                        if !pids.contains(&pid) && ledger.add_existing(pid).is_some() {
                            bpf.watch(pid)?;
                            pids.push(pid);
                        }
                    }
                }
                if pids.is_empty() {
                    return Err(AgentError::NoSuchProcess(*root).into());
                }
                Ok(Started { pids, child: None })
            }
            Target::Command(argv) => {
                let gated = spawn::spawn_gated(argv, stdout_to_stderr)?;
                let pid = gated.pid;
                bpf.watch(pid)?;
                ledger.add_existing(pid);
                gated.release(&argv[0])?;
                Ok(Started { pids: vec![pid], child: Some(pid) })
            }
        }
    }
}
