//! The kernel side opened for a front end (`watch`, `serve`): the programs loaded and attached,
//! their diagnostics forwarded by a task of the front end's runtime, the ring and the maps taken.
use agent_common::names;
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{runtime::Runtime, task::JoinHandle};

use super::{
    bpf_maps::BpfMaps,
    ebpf_log,
    loader::{self, LoadOptions, Loaded},
    shmem_count::ShmemCount,
};

/// What [`open`] gives a front end. The programs stay in `loaded`, for the maps a front end
/// takes next (stacks, cgroups) and for the pipeline.
pub struct Opened {
    pub loaded: Loaded,
    pub ring: RingBuf<MapData>,
    pub bpf: BpfMaps,
    /// The kernel's count of the shmem pages each process created (None without its hook).
    pub shmem: Option<ShmemCount>,
    /// The task that forwards the programs' log for as long as the runtime runs.
    pub log: Option<JoinHandle<()>>,
}

/// Load and attach with `load`, forward the programs' log on `rt`, take the ring and the maps.
pub fn open(load: &LoadOptions, rt: &Runtime) -> anyhow::Result<Opened> {
    let mut loaded = loader::load(load)?;
    let log = {
        let _ctx = rt.enter();
        ebpf_log::forward(&mut loaded.ebpf)
    };
    let ring = RingBuf::try_from(loaded.ebpf.take_map(names::EVENTS).context("EVENTS map missing")?)?;
    let bpf = BpfMaps::take(&mut loaded.ebpf)?;
    let shmem = ShmemCount::take(&mut loaded.ebpf, &loaded.hooks);
    Ok(Opened { loaded, ring, bpf, shmem, log })
}
