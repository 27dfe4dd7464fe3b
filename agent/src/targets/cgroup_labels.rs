//! Labels of a process: its cgroup path, and the Kubernetes pod uid and container id that path
//! names, if any. Parsed from the path alone (no Kubernetes API client): the layouts the
//! kubelet's two cgroup drivers, containerd, CRI-O, Docker and Podman write.
//!
//! `agent watch` puts them on every `proc` record; `agent serve` can label its groups with
//! [`labels_of_pid`] (or [`Labels::from_path`] for a path it already has).
use serde::Serialize;

use super::cgroup::parse_proc_cgroup;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Labels {
    /// The process's cgroup: its v2 path, else (a v1-only process) its memory controller's,
    /// else the first non-root one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The Kubernetes pod uid (dashed form) the path names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The container id (64 hex digits) the path names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl Labels {
    /// The labels a cgroup path carries.
    pub fn from_path(path: &str) -> Labels {
        let mut l = Labels { cgroup: Some(path.to_string()), ..Labels::default() };
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let stem = comp.strip_suffix(".slice").or_else(|| comp.strip_suffix(".scope")).unwrap_or(comp);
            // kubepods-burstable-pod<uid>.slice (systemd driver, `_` for `-`), pod<uid> (cgroupfs).
            if let Some(i) = stem.rfind("pod") {
                let uid = stem[i + 3..].replace('_', "-");
                if is_uuid(&uid) && (i == 0 || stem[..i].ends_with('-')) {
                    l.pod_uid = Some(uid);
                    continue;
                }
            }
            // cri-containerd-<id>.scope, docker-<id>.scope, crio-<id>.scope, libpod-<id>.scope,
            // or a bare <id> (cgroupfs driver, /docker/<id>).
            let id = stem.rsplit('-').next().unwrap_or(stem);
            let runtime = &stem[..stem.len() - id.len()];
            if is_container_id(id) && !runtime.contains("conmon") {
                l.container_id = Some(id.to_string());
            }
        }
        l
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The path labels take from `/proc/PID/cgroup` lines.
pub fn path_of(lines: &[(u32, Vec<String>, String)]) -> Option<String> {
    let v2 = lines.iter().find(|(id, c, _)| *id == 0 && c.is_empty()).map(|l| l.2.as_str());
    let memory = lines.iter().find(|(_, c, _)| c.iter().any(|c| c == "memory")).map(|l| l.2.as_str());
    let any = lines.iter().map(|l| l.2.as_str()).find(|p| *p != "/");
    match (v2, memory, any) {
        (Some(p), _, _) if p != "/" => Some(p),
        (_, Some(p), _) if p != "/" => Some(p),
        (_, _, Some(p)) => Some(p),
        (v2, memory, None) => v2.or(memory),
    }
    .map(str::to_string)
}

/// The labels of a live process (`None` once it is gone).
pub fn labels_of_pid(pid: u32) -> Option<Labels> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    Some(path_of(&parse_proc_cgroup(&text)).map(|p| Labels::from_path(&p)).unwrap_or_default())
}

/// The labels of the processes `proc` records name, kept while they live: a process that
/// exited before its record is handled is labelled from what was read earlier, or from its
/// parent's (a child starts in its parent's cgroup).
#[derive(Default)]
pub struct Labeler {
    by_pid: std::collections::HashMap<u32, Labels>,
}

impl Labeler {
    /// The labels of `pid` for a `proc` record of `event`.
    pub fn label(&mut self, pid: u32, ppid: u32, event: &str) -> Labels {
        let gone = matches!(event, "exit" | "left");
        let cached = || self.by_pid.get(&pid).or_else(|| self.by_pid.get(&ppid)).cloned();
        // An exited pid's number may be another process's already: what we read before first.
        let l = if gone { cached().or_else(|| labels_of_pid(pid)) } else { labels_of_pid(pid).or_else(cached) };
        let l = l.unwrap_or_default();
        if gone {
            self.by_pid.remove(&pid);
        } else {
            self.by_pid.insert(pid, l.clone());
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
    const UID: &str = "7d5c3b1a-2e4f-4a6b-8c0d-1e2f3a4b5c6d";

    #[test]
    fn kubelet_systemd_driver_with_containerd() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let l = Labels::from_path(&p);
        assert_eq!(l.pod_uid.as_deref(), Some(UID));
        assert_eq!(l.container_id.as_deref(), Some(ID));
        assert_eq!(l.cgroup.as_deref(), Some(p.as_str()));
    }

    #[test]
    fn kubelet_cgroupfs_driver_and_guaranteed_pods() {
        let l = Labels::from_path(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!((l.pod_uid.as_deref(), l.container_id.as_deref()), (Some(UID), Some(ID)));
        let l = Labels::from_path(&format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!((l.pod_uid.as_deref(), l.container_id.as_deref()), (Some(UID), Some(ID)));
        let l =
            Labels::from_path(&format!("/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope", UID.replace('-', "_")));
        assert_eq!((l.pod_uid.as_deref(), l.container_id.as_deref()), (Some(UID), Some(ID)));
    }

    #[test]
    fn docker_and_podman_without_a_pod() {
        let l = Labels::from_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!((l.pod_uid, l.container_id.as_deref()), (None, Some(ID)));
        let l = Labels::from_path(&format!("/docker/{ID}"));
        assert_eq!(l.container_id.as_deref(), Some(ID));
        let l = Labels::from_path(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(l.container_id.as_deref(), Some(ID));
        // The monitor of a CRI-O container is not the container.
        let l = Labels::from_path(&format!("/machine.slice/crio-conmon-{ID}.scope"));
        assert_eq!(l.container_id, None);
    }

    #[test]
    fn plain_paths_have_no_pod_or_container() {
        for p in ["/", "/user.slice/user-1000.slice/session-2.scope", "/system.slice/podman.service", "/pod1/abc"] {
            let l = Labels::from_path(p);
            assert_eq!((l.pod_uid, l.container_id), (None, None), "{p}");
        }
        // A uid-looking name not preceded by `pod` at a word start is not a pod.
        assert_eq!(Labels::from_path(&format!("/ipod{UID}")).pod_uid, None);
    }

    #[test]
    fn the_v2_path_wins_then_memory_then_any() {
        let l = parse_proc_cgroup("4:memory:/process_api/abc\n1:cpu:/\n0::/agent-test\n");
        assert_eq!(path_of(&l).as_deref(), Some("/agent-test"));
        let l = parse_proc_cgroup("4:memory:/process_api/abc\n1:cpu:/\n0::/\n");
        assert_eq!(path_of(&l).as_deref(), Some("/process_api/abc"));
        let l = parse_proc_cgroup("9:name=systemd:/user.slice\n4:memory:/\n0::/\n");
        assert_eq!(path_of(&l).as_deref(), Some("/user.slice"));
        assert_eq!(path_of(&parse_proc_cgroup("0::/\n")).as_deref(), Some("/"));
    }

    #[test]
    fn our_own_labels_read_and_kept_until_exit() {
        let me = std::process::id();
        let l = labels_of_pid(me).unwrap();
        assert!(l.cgroup.is_some());
        let mut labeler = Labeler::default();
        assert_eq!(labeler.label(me, 1, "exec"), l);
        // A child gone before its fork record was labelled: its parent's labels.
        assert_eq!(labeler.label(u32::MAX - 1, me, "fork"), l);
        assert_eq!(labeler.label(me, 1, "exit"), l);
        assert!(!labeler.by_pid.contains_key(&me));
    }
}
