//! `--stacks`: the user stacks of page-adding faults, symbolized.
//!
//! The kernel keeps stacks in a stack-trace map and sends their ids with each fault's pages.
//! Here each (pid, stack id) is turned into frames while the pid's mappings are known: an
//! address becomes (module, file offset) through our own copy of its maps, so a process that
//! exited or exec'd since is still resolved; blazesym then symbolizes the file offsets in the
//! module's ELF. A frame that cannot be named shows as `module+0xoffset`, never a bare
//! `[unknown]`.
//!
//! The ELF files are written by whoever runs the watched processes, containers included: they
//! are parsed in an unprivileged helper (`sandbox.rs`, spoken to by `helper.rs`), never here.
//! The agent opens each file (through the process's own mapping of it, `/proc/PID/map_files`:
//! right for a binary deleted or replaced while it runs) and hands the helper the descriptor.
mod elfs;
pub mod fuzz;
mod fuzz_seed;
pub mod helper;
mod outputs;
pub mod sandbox;
mod seccomp;
mod wire;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use agent_common::names;
use aya::{
    maps::{MapData, StackTraceMap},
    Ebpf,
};
use blazesym::symbolize::CodeInfo;
use serde::{Deserialize, Serialize};

pub use self::outputs::{flamegraph, folded_line, ProfileSample};
use self::{
    elfs::{ElfId, Elfs},
    helper::Helper,
};
use crate::{attribution::MappingMap, records::StackStat};

/// A stack's frames, leaf first.
pub type Frames = Arc<[Frame]>;

/// One frame: its address, the mapped region it fell in, and what it resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub addr: u64,
    /// The region of the process's maps that holds `addr` (none: no mapping known).
    pub module: Option<Arc<Module>>,
    pub sym: Arc<Resolved>,
}

impl AsRef<str> for Frame {
    fn as_ref(&self) -> &str {
        &self.sym.text
    }
}

/// A mapped region a frame fell in, as the process's maps had it when the stack was resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Module {
    /// As the maps name it (a file's path, `[vdso]`, `anon@0x...`).
    pub name: Arc<str>,
    pub start: u64,
    pub end: u64,
    /// File offset of `start` (0 when no file backs it).
    pub file_offset: u64,
    /// The ELF's GNU build id, hex, for a file with one.
    pub build_id: Option<Arc<str>>,
}

/// What a frame's address resolved to, shared by every frame at the same place of one ELF.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// What the stack outputs show: `fn (file:line)`, `fn`, or `module+0xoffset` unnamed.
    pub text: String,
    /// The functions at this address, innermost inlined one first and the function that holds
    /// the address last (pprof's line order); empty when it could not be named.
    pub symbols: Vec<Symbol>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    pub name: String,
    /// Source file (with its directory when the debug info has it) and line of the address.
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Symbol {
    fn new(name: &str, ci: Option<&CodeInfo>) -> Symbol {
        Symbol {
            name: name.to_string(),
            file: ci.map(|ci| ci.to_path().display().to_string()),
            line: ci.and_then(|ci| ci.line),
        }
    }
}

fn unnamed(text: String) -> Arc<Resolved> {
    Arc::new(Resolved { text, symbols: Vec::new() })
}

/// Longest the symbolizer helper may take over one request before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// Stack depth histogram buckets: 1, 2-4, 5-8, 9-16, 17+ frames.
pub const DEPTH_BUCKETS: [&str; 5] = ["1", "2-4", "5-8", "9-16", "17+"];

/// A frame placed in its process's maps, not yet named: naming (the helper's symbols and
/// build ids) waits until the stack is wanted, so that it never runs beside a fault storm.
struct Placed {
    addr: u64,
    /// The mapping's name and file offset of `addr` (none: no mapping, or no file offset).
    at: Option<(Arc<str>, Option<u64>)>,
    /// The mapping's (start, end).
    bounds: Option<(u64, u64)>,
    elf: Option<ElfId>,
}

pub struct Stacks {
    map: StackTraceMap<MapData>,
    resolved: HashMap<(u32, i32), Frames>,
    /// Stacks read and placed in their maps at the interval, named when first wanted.
    placed: HashMap<(u32, i32), Vec<Placed>>,
    /// Names by (the ELF file, file offset).
    symbols: HashMap<(ElfId, u64), Arc<Resolved>>,
    /// Regions by (pid, start), shared by the frames that fell in them.
    modules: HashMap<(u32, u64), Arc<Module>>,
    helper: Helper,
    elfs: Elfs,
    pub depths: [u64; 5],
    /// Stacks the map no longer had when we asked (should not happen: entries are never freed).
    pub missing: u64,
}

impl Stacks {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Stacks> {
        let map = ebpf.take_map(names::STACKS).ok_or_else(|| anyhow::anyhow!("STACKS map missing"))?;
        let mut helper = Helper::new(PathBuf::from("/proc/self/exe"), HELPER_TIMEOUT, false);
        if let Err(e) = helper.start() {
            log::warn!("{e}: stacks will show module+offset, unsymbolized");
        }
        Ok(Stacks {
            map: StackTraceMap::try_from(map)?,
            resolved: HashMap::new(),
            placed: HashMap::new(),
            symbols: HashMap::new(),
            modules: HashMap::new(),
            helper,
            elfs: Elfs::default(),
            depths: [0; 5],
            missing: 0,
        })
    }

    /// Forget what was resolved for `pid` (its process is gone; the number may come back).
    pub fn forget_pid(&mut self, pid: u32) {
        self.resolved.retain(|&(p, _), _| p != pid);
        self.placed.retain(|&(p, _), _| p != pid);
        self.elfs.forget_pid(pid);
        self.modules.retain(|&(p, _), _| p != pid);
    }

    /// The frames (leaf first) of stack `id` of `pid`, resolved through `maps` now if not yet.
    pub fn resolve(&mut self, pid: u32, id: i32, maps: &MappingMap) -> Frames {
        if let Some(f) = self.resolved.get(&(pid, id)) {
            return f.clone();
        }
        if !self.placed.contains_key(&(pid, id)) {
            self.place(pid, id, maps);
        }
        let placed = self.placed.remove(&(pid, id)).unwrap_or_default();
        let frames: Frames = placed.into_iter().map(|p| self.frame(pid, p)).collect();
        self.resolved.insert((pid, id), frames.clone());
        frames
    }

    /// Read stack `id` of `pid` from the map and place its addresses in `maps` (current now),
    /// opening their files; no helper request (see `Placed`). Once per (pid, id).
    fn place(&mut self, pid: u32, id: i32, maps: &MappingMap) {
        if self.resolved.contains_key(&(pid, id)) || self.placed.contains_key(&(pid, id)) {
            return;
        }
        // A stack taken without its leaf frame (a collision in the map) is stored under the id
        // without the flag.
        let ips: Vec<u64> = match self.map.get(&((id & !agent_common::STACK_LEAF_SKIPPED) as u32), 0) {
            Ok(st) => st.frames().iter().map(|f| f.ip).collect(),
            Err(_) => {
                self.missing += 1;
                Vec::new()
            }
        };
        let placed: Vec<Placed> = ips
            .iter()
            .map(|&ip| {
                let at = maps.resolve(ip).map(|(m, off)| (m.name.clone(), off));
                let elf = at
                    .as_ref()
                    .and_then(|(name, off)| off.and_then(|_| self.elfs.file_of(pid, name, ip, &mut self.helper)));
                Placed { addr: ip, bounds: at.as_ref().and_then(|_| maps.bounds(ip)), at, elf }
            })
            .collect();
        let bucket = match placed.len() {
            0 | 1 => 0,
            2..=4 => 1,
            5..=8 => 2,
            9..=16 => 3,
            _ => 4,
        };
        self.depths[bucket] += 1;
        self.placed.insert((pid, id), placed);
    }

    /// Name a placed frame (the helper's symbols and build id, cached).
    fn frame(&mut self, pid: u32, p: Placed) -> Frame {
        let ip = p.addr;
        let Some((name, off)) = p.at else {
            return Frame { addr: ip, module: None, sym: unnamed(format!("[no mapping]+{ip:#x}")) };
        };
        let elf = p.elf;
        let module = self.module(pid, ip, &name, off, elf, p.bounds);
        let Some(off) = off else {
            return Frame { addr: ip, module, sym: unnamed(format!("{name}+{ip:#x}")) };
        };
        let Some(elf) = elf else {
            return Frame { addr: ip, module, sym: unnamed(format!("{}+{off:#x}", short(&name))) };
        };
        if let Some(s) = self.symbols.get(&(elf, off)) {
            return Frame { addr: ip, module, sym: s.clone() };
        }
        let sym = match self.symbolize(elf, off) {
            Some(r) => Arc::new(r),
            None => unnamed(format!("{}+{off:#x}", short(&name))),
        };
        self.symbols.insert((elf, off), sym.clone());
        Frame { addr: ip, module, sym }
    }

    /// The region of `maps` holding `ip` (file offset `off` in the ELF read at `elf`).
    fn module(
        &mut self,
        pid: u32,
        ip: u64,
        name: &Arc<str>,
        off: Option<u64>,
        elf: Option<ElfId>,
        bounds: Option<(u64, u64)>,
    ) -> Option<Arc<Module>> {
        let (start, end) = bounds?;
        let file_offset = off.map_or(0, |o| o - (ip - start));
        if let Some(m) = self.modules.get(&(pid, start)) {
            if m.name == *name && m.end == end && m.file_offset == file_offset {
                return Some(m.clone());
            }
        }
        let build_id = elf.and_then(|e| self.elfs.build_id(e, &mut self.helper));
        let m = Arc::new(Module { name: name.clone(), start, end, file_offset, build_id });
        self.modules.insert((pid, start), m.clone());
        Some(m)
    }

    /// The name of file offset `off` of ELF `elf`, from the helper.
    fn symbolize(&mut self, elf: ElfId, off: u64) -> Option<Resolved> {
        let fd = self.elfs.fd(elf)?;
        let r = self.helper.symbolize(elf, fd, &[off])?.pop()?;
        if r.is_none() {
            log::debug!("no symbol at {off:#x} of ELF {elf}");
        }
        r
    }

    /// The `n` stacks of `pid` that added the most pages.
    pub fn top(&mut self, pid: u32, by_stack: &HashMap<i32, i64>, maps: &MappingMap, n: usize) -> Vec<StackStat> {
        let mut v: Vec<(i32, i64)> = by_stack.iter().map(|(&id, &p)| (id, p)).filter(|&(_, p)| p > 0).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter()
            .take(n)
            .map(|(id, pages)| {
                let frames = self.resolve(pid, id, maps).iter().map(|f| f.sym.text.clone()).collect();
                StackStat { pages, frames }
            })
            .collect()
    }
}

/// A module's file name, for unnamed frames.
fn short(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use blazesym::symbolize::{
        source::{Elf, Source},
        Input, Symbolizer,
    };

    use super::*;

    #[test]
    fn folded_lines_are_root_first_and_escape_semicolons() {
        let frames = vec!["leaf".to_string(), "mid;x".to_string(), "main".to_string()];
        assert_eq!(folded_line("app", &frames, 42), "app;main;mid:x;leaf 42");
    }

    #[test]
    fn flamegraph_is_svg_with_the_names() {
        let lines = vec!["app;main;grow_cache 300".to_string(), "app;main;grow_index 100".to_string()];
        let mut svg = Vec::new();
        flamegraph(&lines, "pages", &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("grow_cache") && svg.contains("grow_index"));
    }

    #[test]
    fn symbolizes_a_function_of_this_test_binary() {
        // Our own binary: the file offset of a function's address, through /proc/self/maps.
        let maps = crate::proc_facts::maps(std::process::id()).unwrap();
        let addr = folded_line::<String> as *const () as usize as u64;
        let (id, off) = maps.resolve(addr).unwrap();
        let sym = Symbolizer::new();
        let src = Source::Elf(Elf::new(Path::new(id.name.as_ref())));
        let s = sym.symbolize(&src, Input::FileOffset(&[off.unwrap()])).unwrap();
        let name = s[0].as_sym().map(|s| s.name.to_string()).unwrap_or_default();
        assert!(name.contains("folded_line"), "{name}");
    }

    #[test]
    fn the_helpers_code_symbolizes_and_reads_build_ids_through_a_handed_descriptor() {
        // What the helper does with a descriptor the agent sent (without dropping privileges).
        let maps = crate::proc_facts::maps(std::process::id()).unwrap();
        let addr = folded_line::<String> as *const () as usize as u64;
        let (_, off) = maps.resolve(addr).unwrap();
        let file = elfs::map_file(std::process::id(), addr).expect("our own map_files entry");
        let mut files = HashMap::new();
        let req = wire::Request::Symbolize { file: 1, offsets: vec![off.unwrap(), u64::MAX] };
        let r = sandbox::serve(&mut files, req, Some(file.into()));
        let wire::Response::Symbols(v) = r else { panic!("{r:?}") };
        let name = &v[0].as_ref().expect("named").symbols.last().unwrap().name;
        assert!(name.contains("folded_line"), "{name}");
        assert_eq!(v[1], None, "an offset past the file has no name");
        let r = sandbox::serve(&mut files, wire::Request::BuildId { file: 1 }, None);
        let wire::Response::BuildId(Some(id)) = r else { panic!("{r:?}") };
        assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        let r = sandbox::serve(&mut files, wire::Request::Close { file: 1 }, None);
        assert!(matches!(r, wire::Response::Closed) && files.is_empty(), "{r:?}");
        let r = sandbox::serve(&mut files, wire::Request::BuildId { file: 1 }, None);
        assert!(matches!(r, wire::Response::Error(_)), "{r:?}");
    }
}
