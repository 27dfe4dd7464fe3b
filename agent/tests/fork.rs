//! `fork.rs`: the watched set follows the tree across forks, grandchildren included.
mod common;
use common::*;

#[test]
fn a_grandchild_forked_after_the_watch_began_is_followed() {
    if !ebpf_available("grandchild") {
        return;
    }
    let mib = 16;
    let (recs, code) =
        watch_workload(&[], &["grandchild", "--mib", &mib.to_string(), "--delay-ms", "300", "--hold", "0.3"]);
    assert_eq!(code, 0);
    let forks = of_type(&recs, "proc").into_iter().filter(|r| r["event"] == "fork").collect::<Vec<_>>();
    assert_eq!(forks.len(), 2, "child and grandchild forks: {forks:?}");
    let child = forks[0]["pid"].as_u64().unwrap();
    assert_eq!(forks[1]["ppid"].as_u64().unwrap(), child, "the second fork is the child's");
    let g = proc_by_comm(&recs, "wl-grandchild");
    assert_eq!(g["pid"].as_u64(), forks[1]["pid"].as_u64());
    let (pages, _) = mapping_pages(g, "anon@");
    assert_within("grandchild pages", pages, mib * MIB_PAGES as i64, 5.0);
    let exits = of_type(&recs, "proc").into_iter().filter(|r| r["event"] == "exit").count();
    assert_eq!(exits, 3, "every process of the tree has an exit record");
}
