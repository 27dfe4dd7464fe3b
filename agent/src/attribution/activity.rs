//! What one process did over a span (an interval, or the whole run): faults, fault-caused
//! pages per rss member and per mapping, pages made private by copy-on-write, and pages from
//! other causes.
use std::collections::HashMap;

use agent_common::member;

use super::mappings::MappingId;
use crate::records::{MappingStat, Pages};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStat {
    pub faults: u64,
    pub pages: i64,
    /// Pages made private by copy-on-write that no rss counter showed (see `Activity::cow`).
    pub cow: i64,
}

impl MapStat {
    /// What the mapping grew by: pages added to RSS and pages made private.
    pub fn growth(&self) -> i64 {
        self.pages + self.cow
    }
}

/// What one process did over some span (an interval, or the whole run).
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub faults: u64,
    /// Fault-caused pages per rss member (FILE, ANON, SWAPENTS, SHMEM).
    pub pages: [i64; 4],
    pub by_mapping: HashMap<MappingId, MapStat>,
    /// Pages of private mappings made private by copy-on-write write faults that changed no rss
    /// counter: an anonymous page shared with a fork partner, copied (RSS unchanged, USS +1).
    /// A COW that adds to RSS (the zero page, a private file page) is in `pages` instead.
    pub cow: i64,
    /// Net pages from causes other than faults, indexed by `agent_common::cause`.
    pub other: [i64; 6],
    /// Net hugetlb base pages mapped (see `ledger_hugetlb.rs`): not in RSS, not in `pages`.
    pub hugetlb: i64,
}

impl Activity {
    pub fn is_empty(&self) -> bool {
        self.faults == 0 && self.pages == [0; 4] && self.other == [0; 6] && self.cow == 0 && self.hugetlb == 0
    }
    pub fn merge(&mut self, o: &Activity) {
        self.faults += o.faults;
        self.cow += o.cow;
        self.hugetlb += o.hugetlb;
        for i in 0..4 {
            self.pages[i] += o.pages[i];
        }
        for i in 0..6 {
            self.other[i] += o.other[i];
        }
        for (k, v) in &o.by_mapping {
            let e = self.by_mapping.entry(k.clone()).or_default();
            e.faults += v.faults;
            e.pages += v.pages;
            e.cow += v.cow;
        }
    }
    pub fn pages(&self) -> Pages {
        Pages {
            anon: self.pages[member::ANON as usize],
            file: self.pages[member::FILE as usize],
            shmem: self.pages[member::SHMEM as usize],
            cow: self.cow,
            hugetlb: self.hugetlb,
        }
    }
    pub fn top(&self, n: usize) -> Vec<MappingStat> {
        let mut v: Vec<_> = self.by_mapping.iter().collect();
        v.sort_by(|a, b| b.1.growth().cmp(&a.1.growth()).then(b.1.faults.cmp(&a.1.faults)).then(a.0.cmp(b.0)));
        v.into_iter()
            .take(n)
            .map(|(id, s)| MappingStat {
                mapping: id.name.to_string(),
                shared: id.shared,
                faults: s.faults,
                pages: s.pages,
                cow: s.cow,
            })
            .collect()
    }
}
