//! `--pprof FILE.pb.gz`: faulted pages by user stack as a gzipped pprof profile
//! (`go tool pprof`, and the many tools that read `profile.proto`), written when the summary
//! arrives. The file is created when the watch starts, so a path that cannot be written is
//! refused then.
//!
//! Two sample types, `faulted_pages/count` and `faulted_space/bytes`; one sample per
//! (pid, stack, mapping the pages went to), labelled `pid` (numeric), `comm` and `mapping`. A
//! stack whose faults all landed in one mapping (the usual case) is one sample. Locations carry
//! their mapping (file, GNU build id, address range, file offset) and the functions blazesym
//! named, inlined ones included, with file and line; a frame it could not name is left as an
//! address in its mapping, for pprof to symbolize if it can.
use std::{
    collections::HashMap,
    io::{self, Write as _},
    time::{Duration, SystemTime},
};

use flate2::{write::GzEncoder, Compression};
use prost::Message as _;

use super::{pprof_proto as pb, stack_files::OutFile, Sink};
use crate::{
    records::Record,
    stacks::{Frame, Module, ProfileSample},
};

pub struct Pprof {
    /// Taken when the profile is written (one summary, one profile).
    out: Option<OutFile>,
}

impl Pprof {
    pub fn new(out: OutFile) -> Pprof {
        Pprof { out: Some(out) }
    }
}

impl Sink for Pprof {
    fn emit(&mut self, _ts: f64, record: &Record) -> io::Result<()> {
        let Record::Summary { profile, duration_s, .. } = record else { return Ok(()) };
        let Some(f) = self.out.take() else { return Ok(()) };
        let duration = Duration::from_secs_f64(duration_s.max(0.0));
        let start = SystemTime::now().checked_sub(duration).unwrap_or(SystemTime::UNIX_EPOCH);
        let bytes = build(profile, start, duration).encode_to_vec();
        let mut gz = GzEncoder::new(io::BufWriter::new(&f.file), Compression::default());
        if let Err(e) = gz.write_all(&bytes).and_then(|_| gz.finish()?.flush()) {
            log::error!("cannot write the pprof profile to {}: {e}", f.path.display());
        }
        Ok(())
    }
}

/// The profile of these samples, collected from `start` over `duration`.
pub fn build(samples: &[ProfileSample], start: SystemTime, duration: Duration) -> pb::Profile {
    let mut b = Builder::default();
    b.str(""); // string_table[0] must be ""
    let pages = pb::ValueType { r#type: b.str("faulted_pages"), unit: b.str("count") };
    let space = pb::ValueType { r#type: b.str("faulted_space"), unit: b.str("bytes") };
    let labels = (b.str("pid"), b.str("comm"), b.str("mapping"));
    // Mappings by address: the first is then a main binary (loaded below its libraries), which
    // is what pprof takes `mapping[0]` to be.
    let mut modules: Vec<&Module> =
        samples.iter().flat_map(|s| s.frames.iter()).filter_map(|f| f.module.as_deref()).collect();
    modules.sort_unstable_by(|a, b| (a.start, &a.name, a.end).cmp(&(b.start, &b.name, b.end)));
    modules.dedup();
    for m in modules {
        b.mapping(m);
    }
    for s in samples {
        let location_id = s.frames.iter().map(|f| b.location(f)).collect();
        let label = vec![
            pb::Label { key: labels.0, num: i64::from(s.pid), ..Default::default() },
            pb::Label { key: labels.1, str: b.str(&s.comm), ..Default::default() },
            pb::Label { key: labels.2, str: b.str(&s.mapping), ..Default::default() },
        ];
        b.p.sample.push(pb::Sample { location_id, value: vec![s.pages, s.bytes], label });
    }
    b.mark_mappings();
    let comment = b.str("pages added to RSS by user page faults, by user stack (agent watch --pprof)");
    let since_epoch = start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    pb::Profile {
        sample_type: vec![pages.clone(), space.clone()],
        default_sample_type: space.r#type,
        period_type: Some(pages),
        period: 1,
        time_nanos: i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX),
        duration_nanos: i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX),
        comment: vec![comment],
        string_table: std::mem::take(&mut b.strings),
        ..b.p
    }
}

/// The profile's tables, each entry interned once; ids are 1-based table positions.
#[derive(Default)]
struct Builder {
    p: pb::Profile,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    /// Region -> mapping id (regions of two processes that are alike are one mapping).
    mappings: HashMap<Module, u64>,
    /// (mapping id, address) -> location id.
    locations: HashMap<(u64, u64), u64>,
    /// (name, file) -> function id.
    functions: HashMap<(String, Option<String>), u64>,
}

impl Builder {
    fn str(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), i);
        i
    }

    fn mapping(&mut self, m: &Module) -> u64 {
        if let Some(&id) = self.mappings.get(m) {
            return id;
        }
        let id = self.p.mapping.len() as u64 + 1;
        let (filename, build_id) = (self.str(&m.name), m.build_id.as_deref().map_or(0, |b| self.str(b)));
        self.p.mapping.push(pb::Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.end,
            file_offset: m.file_offset,
            filename,
            build_id,
            ..Default::default()
        });
        self.mappings.insert(m.clone(), id);
        id
    }

    fn location(&mut self, f: &Frame) -> u64 {
        let mapping_id = f.module.as_deref().map_or(0, |m| self.mapping(m));
        if let Some(&id) = self.locations.get(&(mapping_id, f.addr)) {
            return id;
        }
        let id = self.p.location.len() as u64 + 1;
        let line = f
            .sym
            .symbols
            .iter()
            .map(|s| pb::Line {
                function_id: self.function(&s.name, s.file.as_deref()),
                line: s.line.map_or(0, i64::from),
                column: 0,
            })
            .collect();
        self.p.location.push(pb::Location { id, mapping_id, address: f.addr, line, is_folded: false });
        self.locations.insert((mapping_id, f.addr), id);
        id
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (name.to_string(), file.map(str::to_string));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.p.function.len() as u64 + 1;
        let (name_i, filename) = (self.str(name), file.map_or(0, |f| self.str(f)));
        self.p.function.push(pb::Function { id, name: name_i, system_name: name_i, filename, start_line: 0 });
        self.functions.insert(key, id);
        id
    }

    /// What symbol information each mapping's locations have: pprof leaves mappings with
    /// functions alone, and tries to symbolize the others from their files.
    fn mark_mappings(&mut self) {
        for l in &self.p.location {
            let Some(m) = l.mapping_id.checked_sub(1).and_then(|i| self.p.mapping.get_mut(i as usize)) else {
                continue;
            };
            if l.line.is_empty() {
                continue;
            }
            m.has_functions = true;
            m.has_inline_frames |= l.line.len() > 1;
            let has_file = |line: &pb::Line| self.p.function[line.function_id as usize - 1].filename != 0;
            m.has_filenames |= l.line.iter().all(has_file);
            m.has_line_numbers |= l.line.iter().all(|line| line.line != 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::stacks::{Resolved, Symbol};

    fn frame(addr: u64, module: &Arc<Module>, names: &[(&str, u32)]) -> Frame {
        let symbols = names
            .iter()
            .map(|&(n, line)| Symbol { name: n.into(), file: Some("src/w.rs".into()), line: Some(line) })
            .collect();
        Frame { addr, module: Some(module.clone()), sym: Arc::new(Resolved { text: names[0].0.into(), symbols }) }
    }

    fn samples() -> Vec<ProfileSample> {
        let exe = Arc::new(Module {
            name: "/usr/bin/w".into(),
            start: 0x1000,
            end: 0x9000,
            file_offset: 0x1000,
            build_id: Some("abcd01".into()),
        });
        let main = frame(0x1100, &exe, &[("main", 10)]);
        // grow_cache inlined into run: one location, two lines.
        let cache = frame(0x1200, &exe, &[("grow_cache", 20), ("run", 30)]);
        let index = frame(0x1300, &exe, &[("grow_index", 40)]);
        let unnamed = Frame { addr: 0x7000_0000, module: None, sym: Arc::new(Resolved::default()) };
        let s = |pid, pages, frames: Vec<Frame>| ProfileSample {
            pid,
            comm: "w".into(),
            mapping: "anon@0x7f0000000000".into(),
            pages,
            bytes: pages * 4096,
            frames: frames.into(),
        };
        vec![
            s(1, 300, vec![cache.clone(), main.clone()]),
            s(1, 100, vec![index, main.clone()]),
            s(2, 5, vec![unnamed, cache, main]),
        ]
    }

    #[test]
    fn the_encoded_profile_decodes_with_consistent_tables() {
        let bytes = build(&samples(), SystemTime::now(), Duration::from_secs(2)).encode_to_vec();
        let p = pb::Profile::decode(bytes.as_slice()).expect("decodes");
        let st = &p.string_table;
        let s =
            |i: i64| st.get(usize::try_from(i).unwrap()).unwrap_or_else(|| panic!("string {i} out of range")).as_str();
        assert_eq!(st[0], "");
        let mut uniq = st.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), st.len(), "strings interned once");
        let types: Vec<_> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(types, [("faulted_pages", "count"), ("faulted_space", "bytes")]);
        assert_eq!(s(p.default_sample_type), "faulted_space");
        assert_eq!(p.duration_nanos, 2_000_000_000);
        // Ids are 1..=n in order, every reference resolves.
        for (i, m) in p.mapping.iter().enumerate() {
            assert_eq!(m.id, i as u64 + 1);
        }
        for (i, f) in p.function.iter().enumerate() {
            assert_eq!(f.id, i as u64 + 1);
            s(f.name);
            s(f.filename);
        }
        for (i, l) in p.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
            assert!(l.mapping_id as usize <= p.mapping.len());
            assert!(l.line.iter().all(|x| (1..=p.function.len() as u64).contains(&x.function_id)));
        }
        for smp in &p.sample {
            assert_eq!(smp.value.len(), 2);
            assert_eq!(smp.value[1], smp.value[0] * 4096);
            assert!(smp.location_id.iter().all(|&id| (1..=p.location.len() as u64).contains(&id)));
            let keys: Vec<_> = smp.label.iter().map(|l| s(l.key)).collect();
            assert_eq!(keys, ["pid", "comm", "mapping"]);
        }
        // Shared frames are one location; an inlined call is two lines, innermost first.
        assert_eq!(p.location.len(), 4);
        assert_eq!(p.mapping.len(), 1);
        let m = &p.mapping[0];
        assert_eq!((s(m.filename), s(m.build_id)), ("/usr/bin/w", "abcd01"));
        assert_eq!((m.memory_start, m.memory_limit, m.file_offset), (0x1000, 0x9000, 0x1000));
        assert!(m.has_functions && m.has_filenames && m.has_line_numbers && m.has_inline_frames);
        let first = &p.location[usize::try_from(p.sample[0].location_id[0]).unwrap() - 1];
        let names: Vec<_> = first.line.iter().map(|x| s(p.function[x.function_id as usize - 1].name)).collect();
        assert_eq!(names, ["grow_cache", "run"]);
        assert_eq!(first.line[0].line, 20);
        // The unnamed frame: an address, no mapping, no lines.
        let unnamed = &p.location[usize::try_from(p.sample[2].location_id[0]).unwrap() - 1];
        assert_eq!((unnamed.mapping_id, unnamed.address, unnamed.line.len()), (0, 0x7000_0000, 0));
        assert_eq!(p.sample[2].label[0].num, 2);
    }

    #[test]
    fn the_sink_writes_a_gzipped_profile_at_the_summary() {
        let path = std::env::temp_dir().join(format!("agent-pprof-unit-{}.pb.gz", std::process::id()));
        let mut sink = Pprof::new(OutFile::create(&path).unwrap());
        let summary = Record::Summary {
            duration_s: 1.5,
            lost_events: 0,
            events_submitted: 0,
            events_received: 0,
            unnamed_pages: 0,
            agent: Default::default(),
            stacks: None,
            procs: vec![],
            exited: vec![],
            folded: vec![],
            profile: samples(),
        };
        sink.emit(1.5, &summary).unwrap();
        let gz = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut raw = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut raw).unwrap();
        let p = pb::Profile::decode(raw.as_slice()).unwrap();
        assert_eq!(p.sample.len(), 3);
        assert_eq!(p.sample.iter().map(|s| s.value[0]).sum::<i64>(), 405);
    }
}
