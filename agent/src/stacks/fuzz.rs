//! `agent fuzz-symbolizer` (hidden; `cargo xtask fuzz` runs it): malformed ELF files through
//! the same helper and protocol `--stacks` uses, to show the agent survives them.
//!
//! A deterministic mutation fuzzer (same `--seed`, same inputs): each input is a seed ELF (the
//! built-in one of `fuzz_seed.rs`, and any `--corpus` file) with one to three mutations:
//! truncation, bit flips, header and section-header fields set to edge values (huge section
//! counts, offsets past the end), DWARF references pointed at random or enclosing entries
//! (cycles), garbage runs. Each goes into a memfd handed to the helper as a descriptor, which
//! is asked for names and the build id. The helper may crash or hang (it is killed at the
//! timeout): that is counted, and the agent's side carries on.
use std::{
    io::Write as _,
    os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{
    fuzz_seed,
    helper::{Helper, HelperStats},
    wire::{Request, Response},
};

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Inputs to try.
    #[arg(long, default_value_t = 10_000)]
    pub iterations: u64,
    /// Seed of the mutations: the same seed gives the same inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest the helper may take over one request before it is killed, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// More seed ELF files (the built-in seed is always used); each at most 1 MiB is read.
    #[arg(long)]
    pub corpus: Vec<PathBuf>,
    /// Let the helper's stderr through (its panic messages).
    #[arg(long)]
    pub helper_stderr: bool,
}

/// The run's figures, printed as one JSON line on stdout.
#[derive(Debug, Default, Serialize)]
pub struct FuzzReport {
    pub inputs: u64,
    /// Symbolize requests answered: `refused` of them with an error (an ELF it would not
    /// read), the others with one answer per address, `named` of those a name.
    pub answered: u64,
    pub refused: u64,
    pub named: u64,
    pub helper: HelperStats,
    /// How the lost helpers ended, by exit status or signal.
    pub endings: std::collections::BTreeMap<String, u64>,
    pub wall_s: f64,
    /// This process's peak RSS (VmHWM): what the agent's side kept over the run.
    pub agent_peak_rss_kib: u64,
}

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// A section of a seed: header offset, data offset and size, name.
struct Sect {
    hdr: usize,
    off: usize,
    size: usize,
    name: String,
}

/// The sections of a (valid) seed ELF64, bounds-checked.
fn sections(elf: &[u8]) -> Vec<Sect> {
    let rd = |at: usize, n: usize| -> Option<u64> {
        let b = elf.get(at..at + n)?;
        Some(b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64))
    };
    let (Some(shoff), Some(shnum), Some(stridx)) = (rd(40, 8), rd(60, 2), rd(62, 2)) else {
        return Vec::new();
    };
    let hdr = |i: u64| shoff as usize + i as usize * 64;
    let strs = rd(hdr(stridx) + 24, 8).unwrap_or(0) as usize;
    (0..shnum)
        .filter_map(|i| {
            let h = hdr(i);
            let name_at = strs + rd(h, 4)? as usize;
            let name = elf.get(name_at..)?.split(|&b| b == 0).next()?;
            let (off, size) = (rd(h + 24, 8)? as usize, rd(h + 32, 8)? as usize);
            (off.checked_add(size)? <= elf.len()).then(|| Sect {
                hdr: h,
                off,
                size,
                name: String::from_utf8_lossy(name).into(),
            })
        })
        .collect()
}

fn edge(rng: &mut Rng, len: usize) -> u64 {
    let v = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX, 1 << 63, len as u64, len as u64 + 1];
    if rng.below(4) == 0 {
        rng.next()
    } else {
        v[rng.below(v.len() as u64) as usize]
    }
}

fn put(buf: &mut [u8], at: usize, width: usize, v: u64) {
    if let Some(b) = buf.get_mut(at..at + width) {
        b.copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

/// One mutation of `buf`, whose seed's sections are `sects`.
fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, sects: &[Sect]) {
    let len = buf.len();
    match rng.below(7) {
        0 => buf.truncate(rng.below(len as u64) as usize),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let bit = rng.below(len as u64 * 8) as usize;
                buf[bit / 8] ^= 1 << (bit % 8);
            }
        }
        2 => {
            // e_phoff, e_shoff, e_phnum, e_shentsize, e_shnum, e_shstrndx
            let (at, w) = [(32, 8), (40, 8), (56, 2), (58, 2), (60, 2), (62, 2)][rng.below(6) as usize];
            let v = edge(rng, len);
            put(buf, at, w, v);
        }
        3 if !sects.is_empty() => {
            // sh_name, sh_type, sh_offset, sh_size, sh_link, sh_info, sh_entsize
            let s = &sects[rng.below(sects.len() as u64) as usize];
            let (at, w) = [(0, 4), (4, 4), (24, 8), (32, 8), (40, 4), (44, 4), (56, 8)][rng.below(7) as usize];
            let v = edge(rng, len);
            put(buf, s.hdr + at, w, v);
        }
        4 => {
            // A DWARF (or symbol table) word pointed somewhere in its own section: references
            // to random entries, the enclosing one included, make cycles.
            let cands: Vec<&Sect> =
                sects.iter().filter(|s| s.name.starts_with(".debug") || s.name == ".symtab").collect();
            if let Some(s) = cands.get(rng.below(cands.len() as u64) as usize) {
                if s.size >= 4 {
                    let at = s.off + rng.below(s.size as u64 - 3) as usize;
                    let v = rng.below(s.size as u64 + 16);
                    put(buf, at, 4, v);
                }
            }
        }
        5 => {
            let at = rng.below(len as u64) as usize;
            let n = (1 + rng.below(64) as usize).min(len - at);
            for b in &mut buf[at..at + n] {
                *b = rng.next() as u8;
            }
        }
        _ => {
            // A chunk copied over another place (duplicated headers, misplaced tables).
            let (from, to) = (rng.below(len as u64) as usize, rng.below(len as u64) as usize);
            let n = (1 + rng.below(256) as usize).min(len - from).min(len - to);
            buf.copy_within(from..from + n, to);
        }
    }
}

fn memfd(bytes: &[u8]) -> anyhow::Result<OwnedFd> {
    // SAFETY: a constant name; the descriptor returned is new and ours.
    let fd = unsafe { libc::memfd_create(c"fuzz-elf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        bail!("memfd_create: {}", std::io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    Ok(f.into())
}

/// The names of the seed's two functions through the helper: without them the fuzzer would
/// only exercise the header checks.
fn check_seed(helper: &mut Helper) -> anyhow::Result<()> {
    let fd = memfd(&fuzz_seed::elf())?;
    let offs = [fuzz_seed::TEXT_OFF + 0x14, fuzz_seed::TEXT_OFF + fuzz_seed::TEXT_LEN / 2 + 4];
    let got = helper.symbolize(u64::MAX, fd.as_fd(), &offs).context("the helper gave no answer for the seed")?;
    helper.close(u64::MAX);
    let names: Vec<Vec<String>> =
        got.iter().map(|r| r.iter().flat_map(|r| r.symbols.iter().map(|s| s.name.clone())).collect()).collect();
    let want = [vec!["seed_helper".to_string(), "seed_main".to_string()], vec!["seed_helper".to_string()]];
    if names != want {
        bail!("the seed ELF symbolized as {names:?}, not {want:?}");
    }
    Ok(())
}

pub fn run(args: FuzzArgs) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let exe = PathBuf::from("/proc/self/exe");
    let mut helper = Helper::new(exe, Duration::from_millis(args.timeout_ms), !args.helper_stderr);
    helper.start().context("starting the symbolizer helper")?;
    check_seed(&mut helper)?;
    let mut seeds = vec![fuzz_seed::elf()];
    for p in &args.corpus {
        let mut b = std::fs::read(p).with_context(|| format!("corpus file {}", p.display()))?;
        b.truncate(1 << 20);
        seeds.push(b);
    }
    let sects: Vec<Vec<Sect>> = seeds.iter().map(|s| sections(s)).collect();
    let mut rng = Rng(args.seed);
    let mut rep = FuzzReport::default();
    let step = (args.iterations / 10).max(1);
    for i in 0..args.iterations {
        let k = rng.below(seeds.len() as u64) as usize;
        let mut buf = seeds[k].clone();
        for _ in 0..1 + rng.below(3) {
            if !buf.is_empty() {
                mutate(&mut rng, &mut buf, &sects[k]);
            }
        }
        let fd = memfd(&buf)?;
        let len = buf.len() as u64;
        let offs = [fuzz_seed::TEXT_OFF + 0x14, rng.below(len + 1), rng.below(len + 1), rng.next()];
        match helper.ask(i, fd.as_fd(), &Request::Symbolize { file: i, offsets: offs.to_vec() }) {
            Some(Response::Symbols(v)) => {
                rep.answered += 1;
                rep.named += v.iter().filter(|r| r.is_some()).count() as u64;
            }
            Some(_) => {
                rep.answered += 1;
                rep.refused += 1;
            }
            None => {}
        }
        if rng.below(4) == 0 {
            let _ = helper.build_id(i, fd.as_fd());
        }
        helper.close(i);
        rep.inputs += 1;
        rep.helper = helper.stats;
        if (i + 1) % step == 0 {
            let h = &rep.helper;
            eprintln!(
                "fuzz: {} inputs, {:.0}s: helper crashes {}, timeouts {}, restarts {}",
                i + 1,
                t0.elapsed().as_secs_f64(),
                h.crashes,
                h.timeouts,
                h.restarts
            );
        }
    }
    rep.helper = helper.stats;
    rep.endings = helper.endings.clone();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    rep.agent_peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    rep.wall_s = (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    println!("{}", serde_json::to_string(&rep)?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_parses_into_its_sections_and_mutations_are_deterministic() {
        let seed = fuzz_seed::elf();
        let names: Vec<String> = sections(&seed).into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["", ".text", ".symtab", ".strtab", ".debug_abbrev", ".debug_info", ".debug_line", ".shstrtab"]
        );
        let run = |s| {
            let (mut rng, sects) = (Rng(s), sections(&seed));
            (0..200)
                .map(|_| {
                    let mut b = seed.clone();
                    mutate(&mut rng, &mut b, &sects);
                    b
                })
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same inputs");
        assert_ne!(a, run(8));
        assert!(a.iter().filter(|b| **b != seed).count() > 150, "most mutations change the file");
    }
}
