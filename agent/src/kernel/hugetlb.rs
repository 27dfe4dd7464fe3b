//! hugetlb pages, seen from the kernel side: `kmem:rss_stat` never fires for them, so the fault
//! program reads the mm's own hugetlb counter (`mm_struct.hugetlb_usage`, what
//! `/proc/PID/status` HugetlbPages shows) after a fault that changed no rss counter
//! (agent-ebpf `hugetlb.rs`). Its offset comes from the kernel's BTF.
use crate::kernel::btf::Btf;

/// `mm_struct.hugetlb_usage`'s offset, from the kernel's BTF (passed only when the exec
/// program's `task_struct.mm` offset was found too); else None, said once: hugetlb pages are
/// then left out of the fault records (smaps readings still carry them).
pub fn usage_offset(btf: Option<&Btf>) -> Option<u32> {
    let off = btf.and_then(|b| b.member_offset("mm_struct", "hugetlb_usage"));
    if off.is_none() {
        log::info!(
            "no mm_struct.hugetlb_usage in the kernel's BTF: hugetlb pages are not attributed to faults (smaps readings still carry hugetlb_kib)"
        );
    }
    off
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_the_counter() {
        let Some(btf) = super::Btf::from_sys() else { return };
        let off =
            btf.member_offset("mm_struct", "hugetlb_usage").expect("mm_struct.hugetlb_usage (CONFIG_HUGETLB_PAGE)");
        assert!(off > 0);
    }
}
