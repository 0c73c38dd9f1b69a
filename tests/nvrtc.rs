//! Tier 3: every kernel compiled with NVRTC for sm_90 at build time, with no spills and registers
//! within budget. Skips (with a line) where the build had no NVRTC, unless ASIF_REQUIRE_NVRTC=1
//! (CI sets it), which makes a missing NVRTC a failure.
mod common;

use asif_kernels::kernels::{self, NvrtcBuild};

/// Registers per thread that any kernel may use: 64 keeps at least 4 blocks of 256 threads per SM.
const REGISTER_BUDGET: u32 = 64;

fn compiled() -> bool {
    static SKIP_LINE: std::sync::Once = std::sync::Once::new();
    match kernels::nvrtc_build() {
        NvrtcBuild::Compiled { .. } => true,
        NvrtcBuild::SourceOnly { reason } => {
            let required =
                std::env::var("ASIF_REQUIRE_NVRTC").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(
                !required,
                "ASIF_REQUIRE_NVRTC is set but the build had no NVRTC: {reason}"
            );
            SKIP_LINE.call_once(|| {
                common::skip("NVRTC tier (tier 3)", &format!("the build had no NVRTC ({reason}); run scripts/install-nvrtc.sh and rebuild"))
            });
            false
        }
    }
}

#[test]
fn every_family_compiles_to_ptx_and_sm90_cubin() {
    if !compiled() {
        return;
    }
    assert!(
        !kernels::families().is_empty(),
        "no kernel families embedded"
    );
    for family in kernels::families() {
        assert!(
            family.compile_error.is_none(),
            "kernels/{}.cu failed to compile:\n{}",
            family.name,
            family.compile_error.unwrap_or_default()
        );
        let ptx = family.ptx.unwrap_or_default();
        assert!(
            ptx.contains(".target sm_80"),
            "{}: PTX is not for the portable compute_80 target",
            family.name
        );
        let cubin = family.cubin_sm90.unwrap_or_default();
        assert!(
            cubin.starts_with(b"\x7fELF"),
            "{}: the sm_90 cubin is not an ELF image",
            family.name
        );
        for entry in family.entry_points {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{}: entry point {entry} missing from the PTX",
                family.name
            );
        }
    }
}

#[test]
fn every_kernel_has_no_spills_and_fits_the_register_budget() {
    if !compiled() {
        return;
    }
    for family in kernels::families() {
        for entry in family.entry_points {
            let resources = family
                .resources
                .iter()
                .find(|r| r.kernel == *entry)
                .unwrap_or_else(|| panic!("{}: no ptxas report for {entry}", family.name));
            assert_eq!(
                resources.spill_store_bytes + resources.spill_load_bytes,
                0,
                "{entry} spills: {resources:?}"
            );
            assert_eq!(
                resources.stack_bytes, 0,
                "{entry} uses a stack frame: {resources:?}"
            );
            assert!(
                resources.registers <= REGISTER_BUDGET,
                "{entry} uses {} registers (budget {REGISTER_BUDGET})",
                resources.registers
            );
        }
    }
}
