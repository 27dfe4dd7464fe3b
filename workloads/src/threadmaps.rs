//! `workloads threadmaps`: --threads threads of one process, each writing every page of its own
//! private anonymous mapping of --mib, all at once (on as many CPUs as there are). The mappings
//! are kept apart by PROT_NONE guard pages. Known answer: each mapping gets --mib of pages; the
//! rss deltas of concurrent faults of one mm, taken in ring order, may move a page or two
//! between them (tests/thread_deltas.rs measures how many).
use std::{sync::Barrier, time::Duration};

use agent::demo::procs::{map, page_size, set_name, touch, MIB};

#[derive(clap::Args, Debug)]
pub struct ThreadMaps {
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Seconds to hold before exiting.
    #[arg(long, default_value_t = 0.3)]
    hold: f64,
}

pub fn run(a: ThreadMaps) -> i32 {
    set_name("wl-threadmaps");
    let (len, page) = (a.mib * MIB, page_size());
    // A guard page before each mapping and after the last (a thread's stack mapped next to
    // one would merge with it).
    let stride = page + len;
    let base = map(stride * a.threads + page, false);
    for i in 0..=a.threads {
        // SAFETY: guard pages inside the mapping made above.
        let guard = unsafe { base.add(i * stride) };
        assert_eq!(unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) }, 0, "mprotect");
    }
    let go = Barrier::new(a.threads);
    std::thread::scope(|s| {
        for i in 0..a.threads {
            let (go, at) = (&go, base as usize + i * stride + page);
            s.spawn(move || {
                go.wait();
                touch(at as *mut u8, len, Duration::ZERO);
            });
        }
    });
    std::thread::sleep(Duration::from_secs_f64(a.hold));
    0
}
