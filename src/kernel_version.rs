//! Which version of a kernel family an op launches.
//!
//! A rewritten kernel (v2) lands beside the one it replaces (v1), as llm.c keeps its numbered
//! kernel versions: both pass the same parity tests, and the old one stays the default until a
//! GPU run shows the new one faster on every benchmark row (`docs/gpu.md`). Each op that has more
//! than one version asks [`selected`] for its family's version when it launches, so one process
//! can time both side by side.
//!
//! The choice, first match wins:
//! 1. a scoped override on the calling thread ([`with_version`]), for tests and benchmarks (the
//!    op reads it on the thread that calls it, before the launch);
//! 2. the environment: `ASIF_KERNEL_<FAMILY>=v1|v2|v3` (family upper-cased, for example
//!    `ASIF_KERNEL_ATTENTION=v2`), read on every call;
//! 3. the family's default in [`DEFAULTS`] (v1 for every family until a GPU run decides).
//!
//! A fused kernel family (issue 20) uses the same switch for fused or not: at v1 its kernels are
//! not launched and the model runs the unfused ops as before; at v2 it runs the fused kernel
//! (`bias_gelu`: the FFN's bias add and GELU, `kernels/bias_gelu.cu`, read by
//! `model::blocks`; `input_embedding`: the item and attribute lookups, `kernels/input_embedding.cu`,
//! read by `model::Model`). The unfused v1 stays the default until a GPU run measures both.
//!
//! A family with only one version ignores all of this. A third version exists only for the
//! families in [`THIRD_VERSION_FAMILIES`] (HIE's tensor-core products, issue 19); selecting v3
//! for another family is an error from [`selected`], by override or environment alike.
use std::cell::RefCell;

use crate::{Error, Result};

/// A kernel family's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelVersion {
    /// The first-round kernel.
    V1,
    /// The rewrite (tensor cores, vector I/O; see the family's `.cu` header).
    V2,
    /// A second rewrite, for the families in [`THIRD_VERSION_FAMILIES`] only (HIE: v2's QR with
    /// its products on 3xTF32 tensor-core tiles, `kernels/hie.cu`).
    V3,
}

impl KernelVersion {
    /// "v1", "v2" or "v3".
    pub fn name(self) -> &'static str {
        match self {
            KernelVersion::V1 => "v1",
            KernelVersion::V2 => "v2",
            KernelVersion::V3 => "v3",
        }
    }

    /// Parses "v1", "v2" or "v3" (case-insensitive).
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(KernelVersion::V1),
            "v2" | "2" => Ok(KernelVersion::V2),
            "v3" | "3" => Ok(KernelVersion::V3),
            other => Err(Error::argument(
                "kernel_version",
                format!("'{other}': expected v1, v2 or v3"),
            )),
        }
    }
}

/// The default version of each family that has more than one; every other family has one.
/// Change an entry only with the GPU run that shows the new version faster (cite it beside the
/// entry).
pub const DEFAULTS: &[(&str, KernelVersion)] = &[];

/// The families that have a version 3.
pub const THIRD_VERSION_FAMILIES: &[&str] = &["hie"];

/// The versions `family` can select, oldest first: v1 and v2, and v3 for the families in
/// [`THIRD_VERSION_FAMILIES`].
pub fn versions(family: &str) -> &'static [KernelVersion] {
    if THIRD_VERSION_FAMILIES.contains(&family) {
        &[KernelVersion::V1, KernelVersion::V2, KernelVersion::V3]
    } else {
        &[KernelVersion::V1, KernelVersion::V2]
    }
}

/// `version` if `family` has it, else a typed error naming both (`how`: where it came from).
fn available(family: &str, version: KernelVersion, how: &str) -> Result<KernelVersion> {
    if versions(family).contains(&version) {
        Ok(version)
    } else {
        Err(Error::argument(
            "kernel_version",
            format!(
                "{how} selects {} for family '{family}', which has no {}: only {} have one",
                version.name(),
                version.name(),
                THIRD_VERSION_FAMILIES.join(", ")
            ),
        ))
    }
}

thread_local! {
    static OVERRIDES: RefCell<Vec<(&'static str, KernelVersion)>> = const { RefCell::new(Vec::new()) };
}

/// The environment variable that selects `family`'s version.
pub fn environment_variable(family: &str) -> String {
    format!("ASIF_KERNEL_{}", family.to_ascii_uppercase())
}

/// The version of `family` an op launches now on this thread. A malformed environment value is
/// an error naming the variable, not a silent fallback.
pub fn selected(family: &str) -> Result<KernelVersion> {
    if let Some(version) = OVERRIDES.with(|o| {
        o.borrow()
            .iter()
            .rev()
            .find(|(f, _)| *f == family)
            .map(|(_, v)| *v)
    }) {
        return available(family, version, "a scoped override");
    }
    let variable = environment_variable(family);
    if let Ok(value) = std::env::var(&variable) {
        let version = KernelVersion::parse(&value).map_err(|_| {
            Error::argument(
                "kernel_version",
                format!("{variable}='{value}': expected v1, v2 or v3"),
            )
        })?;
        return available(family, version, &format!("{variable}='{value}'"));
    }
    Ok(DEFAULTS
        .iter()
        .find(|(f, _)| *f == family)
        .map(|(_, v)| *v)
        .unwrap_or(KernelVersion::V1))
}

/// Runs `f` with `family` launching `version` on this thread (nested calls stack; the override
/// ends when `f` returns or unwinds).
pub fn with_version<R>(family: &'static str, version: KernelVersion, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            OVERRIDES.with(|o| {
                o.borrow_mut().pop();
            });
        }
    }
    OVERRIDES.with(|o| o.borrow_mut().push((family, version)));
    let _pop = Pop;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_nest_and_end_with_their_scope() {
        let family = "kernel_version_unit_test_family";
        assert_eq!(selected(family).unwrap(), KernelVersion::V1);
        with_version(family, KernelVersion::V2, || {
            assert_eq!(selected(family).unwrap(), KernelVersion::V2);
            with_version(family, KernelVersion::V1, || {
                assert_eq!(selected(family).unwrap(), KernelVersion::V1);
            });
            assert_eq!(selected(family).unwrap(), KernelVersion::V2);
            assert_eq!(selected("another_family").unwrap(), KernelVersion::V1);
        });
        assert_eq!(selected(family).unwrap(), KernelVersion::V1);
    }

    #[test]
    fn the_environment_selects_and_a_bad_value_is_an_error() {
        let family = "kernel_version_env_test_family";
        let variable = environment_variable(family);
        assert_eq!(variable, "ASIF_KERNEL_KERNEL_VERSION_ENV_TEST_FAMILY");
        std::env::set_var(&variable, "V2");
        assert_eq!(selected(family).unwrap(), KernelVersion::V2);
        std::env::set_var(&variable, "v4");
        let error = selected(family).unwrap_err().to_string();
        assert!(error.contains(&variable), "{error}");
        // A version the family does not have: an error naming the variable, not a fallback.
        std::env::set_var(&variable, "v3");
        let error = selected(family).unwrap_err().to_string();
        assert!(
            error.contains(&variable) && error.contains("no v3"),
            "{error}"
        );
        std::env::remove_var(&variable);
        assert_eq!(selected(family).unwrap(), KernelVersion::V1);
    }

    #[test]
    fn parse_names_round_trip() {
        for v in [KernelVersion::V1, KernelVersion::V2, KernelVersion::V3] {
            assert_eq!(KernelVersion::parse(v.name()).unwrap(), v);
        }
        assert!(KernelVersion::parse("v0").is_err());
    }

    #[test]
    fn only_hie_has_a_third_version() {
        assert_eq!(versions("hie").len(), 3);
        with_version("hie", KernelVersion::V3, || {
            assert_eq!(selected("hie").unwrap(), KernelVersion::V3);
        });
        with_version("attention", KernelVersion::V3, || {
            let error = selected("attention").unwrap_err().to_string();
            assert!(
                error.contains("'attention'") && error.contains("no v3"),
                "{error}"
            );
        });
    }
}
