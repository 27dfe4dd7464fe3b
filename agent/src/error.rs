//! Errors a user can hit, each one line that names the fix, with the exit code it maps to.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("agent needs root to load eBPF programs (CAP_BPF, CAP_PERFMON): run it with sudo")]
    NotRoot,
    #[error("no such process: {0}")]
    NoSuchProcess(i32),
    #[error("{0}: command not found")]
    CommandNotFound(String),
    #[error("{0}: permission denied (not executable)")]
    NotExecutable(String),
    #[error(
        "tracefs is not mounted and mounting it failed ({0}): run `sudo mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    Tracefs(String),
    #[error("tracepoint {0} is missing from this kernel (no {1}); the agent cannot run without it")]
    TracepointMissing(String, String),
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
    #[error("cannot write {0}: {1}")]
    Output(String, std::io::Error),
    #[error("{0}")]
    Usage(String),
}

impl AgentError {
    /// Shell-like exit codes: 127 command not found, 126 not executable, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::CommandNotFound(_) => 127,
            AgentError::NotExecutable(_) => 126,
            _ => 1,
        }
    }
}
