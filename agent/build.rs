//! Builds `agent-ebpf` for the BPF target (nightly + bpf-linker, see `cargo xtask setup`) and
//! leaves the object in OUT_DIR for `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
