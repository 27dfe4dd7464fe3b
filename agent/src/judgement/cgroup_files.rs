//! Naming a cgroup's unmapped memory: tmpfs files (`/dev/shm`, a container's tmpfs mounts) that
//! hold pages while no member maps them. Found two ways, both as the members see the files:
//! the tmpfs files members hold open (`/proc/PID/fd`, which also finds unlinked files and
//! memfds), and every file of the tmpfs mounts members have and the host does not (a
//! container's own; `/proc/PID/mountinfo`, walked through `/proc/PID/root`). The host's tmpfs
//! mounts are not walked, even as a container sees them: the files there are anybody's, and the
//! kernel does not say which cgroup a file's pages are charged to. A file any member maps (`/proc/PID/maps`) is
//! explained already.
//!
//! Bounded: at most [`MAX_MEMBERS`] members looked at and [`MAX_ENTRIES`] directory entries and
//! open files looked at per sweep, so a huge tmpfs or a server's many sockets cannot stall the
//! pipeline.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::cgroup::UnmappedFile;

const MAX_MEMBERS: usize = 64;
const MAX_ENTRIES: usize = 20_000;
/// Files listed per record.
pub const TOP: usize = 5;
/// Smallest file worth naming.
const MIN_BYTES: u64 = 64 * 1024;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// tmpfs mounts in a mountinfo text: (device `major:minor`, mount point); never devtmpfs,
/// never the tmpfs that holds the cgroup mounts.
pub fn tmpfs_mounts(mountinfo: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let (dev, point) = (f.get(2)?, f.get(4)?);
            (right.split(' ').next()? == "tmpfs" && !point.starts_with("/sys/"))
                .then(|| (dev.to_string(), point.replace("\\040", " ")))
        })
        .collect()
}

/// The biggest tmpfs files the members hold pages of and none of them maps.
pub fn top_unmapped(members: &[u32]) -> Vec<UnmappedFile> {
    let members = &members[..members.len().min(MAX_MEMBERS)];
    let mut mapped: HashSet<String> = HashSet::new();
    for pid in members {
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            mapped.extend(maps.lines().filter_map(|l| l.splitn(6, ' ').nth(5)).map(|p| p.trim().to_string()));
        }
    }
    // (dev, ino) -> the file, so a file found through two members or both ways is listed once.
    let mut found: HashMap<(u64, u64), UnmappedFile> = HashMap::new();
    let mut budget = MAX_ENTRIES;
    let mut walked: HashSet<u64> = HashSet::new();
    let host_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let host: HashSet<String> = tmpfs_mounts(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
        .into_iter()
        .map(|m| m.0)
        .collect();
    for &pid in members {
        fds(pid, &mut budget, &mut found);
        if std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == host_ns {
            continue;
        }
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let mounts = tmpfs_mounts(&std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default());
        for (_, point) in mounts.into_iter().filter(|(dev, _)| !host.contains(dev)) {
            let dir = root.join(point.trim_start_matches('/'));
            let Ok(md) = std::fs::metadata(&dir) else { continue };
            if walked.insert(md.dev()) {
                walk(&dir, &root, md.dev(), &mut budget, &mut found);
            }
        }
    }
    let mut out: Vec<UnmappedFile> =
        found.into_values().filter(|f| f.bytes >= MIN_BYTES && !mapped.contains(f.path.as_str())).collect();
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    out.truncate(TOP);
    out
}

/// Regular files under `dir` on device `dev` (not crossing into other mounts), named as seen
/// from `root`.
fn walk(dir: &Path, root: &Path, dev: u64, budget: &mut usize, found: &mut HashMap<(u64, u64), UnmappedFile>) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let Ok(md) = e.metadata() else { continue };
            if md.dev() != dev {
                continue;
            }
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                let path = Path::new("/").join(e.path().strip_prefix(root).unwrap_or(&e.path()));
                found.entry((md.dev(), md.ino())).or_insert(UnmappedFile {
                    path: path.display().to_string(),
                    bytes: md.blocks() * 512,
                    via: "mount",
                });
            }
        }
    }
}

/// tmpfs files `pid` holds open (unlinked ones and memfds included).
fn fds(pid: u32, budget: &mut usize, found: &mut HashMap<(u64, u64), UnmappedFile>) {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return };
    for e in rd.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let Ok(md) = std::fs::metadata(e.path()) else { continue };
        if !md.is_file() || !on_tmpfs(&e.path()) {
            continue;
        }
        let Ok(target) = std::fs::read_link(e.path()) else { continue };
        found.entry((md.dev(), md.ino())).or_insert(UnmappedFile {
            path: target.display().to_string(),
            bytes: md.blocks() * 512,
            via: "fd",
        });
    }
}

fn on_tmpfs(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs into a zeroed struct with a NUL-terminated path.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == TMPFS_MAGIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_mounts_leave_out_devtmpfs_and_the_cgroup_tmpfs() {
        let mi = "\
22 1 0:21 / /dev rw - devtmpfs udev rw
25 22 0:23 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
40 1 0:40 / /run/my\\040dir rw - tmpfs tmpfs rw
";
        let points: Vec<String> = tmpfs_mounts(mi).into_iter().map(|m| m.1).collect();
        assert_eq!(points, ["/dev/shm", "/run/my dir"]);
        assert_eq!(tmpfs_mounts(mi)[0].0, "0:23");
    }

    #[test]
    fn an_open_unmapped_tmpfs_file_is_named_and_a_mapped_one_is_not() {
        let dir = "/dev/shm";
        if !on_tmpfs(Path::new(dir)) {
            eprintln!("SKIP: {dir} is not tmpfs here");
            return;
        }
        let path = format!("{dir}/agent-cgroup-files-{}", std::process::id());
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let got = top_unmapped(&[std::process::id()]);
        let hit = got.iter().find(|u| u.path == path).cloned();
        std::fs::remove_file(&path).unwrap();
        drop(f);
        let hit = hit.unwrap_or_else(|| panic!("{path} not in {got:?}"));
        assert_eq!(hit.bytes, 1 << 20);
    }
}
