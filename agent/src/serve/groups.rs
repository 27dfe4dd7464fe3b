//! How serve groups processes into series (`--group-by`), and where a process's cgroup path
//! comes from.

/// How processes are grouped into series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// The process's name (its current comm).
    Comm,
    /// Its cgroup path, read from /proc/PID/cgroup when it is first seen.
    Cgroup,
    /// The watched tree it belongs to, named `comm:pid` of the tree's root.
    Tree,
}

impl GroupBy {
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        match s {
            "comm" => Ok(GroupBy::Comm),
            "cgroup" => Ok(GroupBy::Cgroup),
            "tree" => Ok(GroupBy::Tree),
            _ => Err(format!("--group-by {s}: unknown grouping; use comm, cgroup or tree")),
        }
    }
}

/// A process's cgroup: the unified (v2) hierarchy's path, else the v1 memory controller's.
pub fn cgroup_of(pid: u32) -> Option<String> {
    parse_cgroup(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

fn parse_cgroup(text: &str) -> Option<String> {
    let lines: Vec<(&str, &str)> =
        text.lines().filter_map(|l| l.split_once(':').and_then(|(_, r)| r.split_once(':'))).collect();
    let find = |want: &dyn Fn(&str) -> bool| lines.iter().find(|(c, _)| want(c)).map(|(_, p)| p.to_string());
    find(&|c| c.is_empty()).or_else(|| find(&|c| c.split(',').any(|x| x == "memory")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_prefers_unified_then_memory() {
        assert_eq!(parse_cgroup("12:memory:/a/b\n0::/user.slice/x.scope\n").as_deref(), Some("/user.slice/x.scope"));
        assert_eq!(parse_cgroup("5:cpu,cpuacct:/c\n4:memory:/m\n").as_deref(), Some("/m"));
        assert_eq!(parse_cgroup("5:cpu:/c\n"), None);
    }

    #[test]
    fn group_by_parses_known_names_only() {
        assert_eq!(GroupBy::parse("tree"), Ok(GroupBy::Tree));
        assert!(GroupBy::parse("user").unwrap_err().contains("use comm, cgroup or tree"));
    }
}
