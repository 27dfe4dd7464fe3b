//! What one process did over a span (an interval, or the whole run): faults, fault-caused
//! pages per rss member and per mapping, and pages from other causes.
use std::collections::HashMap;

use agent_common::member;

use super::mappings::MappingId;
use crate::records::{MappingStat, Pages};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStat {
    pub faults: u64,
    pub pages: i64,
}

/// What one process did over some span (an interval, or the whole run).
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub faults: u64,
    /// Fault-caused pages per rss member (FILE, ANON, SWAPENTS, SHMEM).
    pub pages: [i64; 4],
    pub by_mapping: HashMap<MappingId, MapStat>,
    /// Net pages from causes other than faults, indexed by `agent_common::cause`.
    pub other: [i64; 6],
}

impl Activity {
    pub fn is_empty(&self) -> bool {
        self.faults == 0 && self.pages == [0; 4] && self.other == [0; 6]
    }
    pub fn merge(&mut self, o: &Activity) {
        self.faults += o.faults;
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
        }
    }
    pub fn pages(&self) -> Pages {
        Pages {
            anon: self.pages[member::ANON as usize],
            file: self.pages[member::FILE as usize],
            shmem: self.pages[member::SHMEM as usize],
        }
    }
    pub fn top(&self, n: usize) -> Vec<MappingStat> {
        let mut v: Vec<_> = self.by_mapping.iter().collect();
        v.sort_by(|a, b| b.1.pages.cmp(&a.1.pages).then(b.1.faults.cmp(&a.1.faults)).then(a.0.cmp(b.0)));
        v.into_iter()
            .take(n)
            .map(|(id, s)| MappingStat {
                mapping: id.name.to_string(),
                shared: id.shared,
                faults: s.faults,
                pages: s.pages,
            })
            .collect()
    }
}
