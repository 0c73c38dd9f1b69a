//! Threads of the CPU path (docs/architecture.md, "Threads on the CPU").
//!
//! The CPU arms of the hot ops split their work into independent units (a sequence, a
//! (sequence, head) pair, a block of rows, a GEMM tile, a block of parameters) and run the units
//! on rayon's current pool: the global one (`RAYON_NUM_THREADS`, else every core, or
//! [`set_threads`]), or a pool the caller installs (`rayon::ThreadPool::install`, as
//! `tests/cpu_threads.rs` does).
//!
//! **Results do not depend on the thread count.** A unit's boundaries come from the problem's
//! sizes only, never from the number of threads; a unit writes its own outputs; where units feed
//! one sum (a gradient of a shared input, a loss), each unit writes a partial and the partials are
//! added in unit order afterwards. So a run with 1 thread and with N threads is bit-identical.
use rayon::prelude::*;

use crate::{Error, Result};

/// Sets the size of rayon's global pool (the CPU path's threads) once, before any CPU op runs;
/// a typed error if the pool already exists or `threads` is 0.
pub fn set_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| Error::Config(format!("cannot set {threads} CPU threads: {e}")))
}

/// Asks the C allocator to keep freed host memory for reuse instead of giving it back to the
/// operating system: glibc's `mallopt` with the mmap threshold at 1 GiB, no trimming and 256 MiB
/// of top padding. The CPU path allocates and frees buffers of megabytes in every op (activations,
/// attention probabilities, logits); with glibc's defaults each such free is returned to the
/// kernel and the next allocation page-faults and zero-fills it again (a profile of the SASRec
/// CPU step showed `clear_page_erms` and the page-fault handler at 8.5 % of the samples, issue
/// 23). The cost is a higher resident set: freed memory stays with the process. A program-wide
/// setting, so a program (here the train example) opts in; the library never calls it itself.
/// Returns whether it was applied (glibc on Linux only; elsewhere it does nothing).
pub fn keep_freed_host_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's <malloc.h> parameter numbers.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes the allocator's tuning parameters; it returns 0 on an
        // invalid value and changes nothing then.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
                && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1
                && mallopt(M_TOP_PAD, 256 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Threads of the pool the CPU ops would run on from here.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f(index, block)` over the consecutive `block_len`-element blocks of `out` (the last one
/// shorter), in parallel. The blocks depend on `block_len` only.
pub(crate) fn for_each_block<T: Send>(
    out: &mut [T],
    block_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let block_len = block_len.max(1);
    if out.len() <= block_len {
        if !out.is_empty() {
            f(0, out);
        }
        return;
    }
    out.par_chunks_mut(block_len)
        .enumerate()
        .for_each(|(i, block)| f(i, block));
}

/// `f(unit)` for `unit` in `0..units`, in parallel, collected in unit order.
pub(crate) fn map_units<R: Send>(units: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if units <= 1 {
        return (0..units).map(f).collect();
    }
    (0..units).into_par_iter().map(f).collect()
}

/// A raw pointer that may cross threads: the caller guarantees the units write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
// SAFETY: only used to hand disjoint regions of one buffer to parallel units (see callers).
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so a closure captures the whole `Send` wrapper, not the field).
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}

/// Elements per unit of the elementwise ops and rows-times-columns per unit of the row-wise ones.
pub(crate) const ELEMENTS_PER_UNIT: usize = 1 << 15;

/// Rows per unit of a row-wise op over rows of `cols` elements (at least 1).
pub(crate) fn rows_per_unit(cols: usize) -> usize {
    (ELEMENTS_PER_UNIT / cols.max(1)).max(1)
}

/// `f(range)` over consecutive ranges of `block` indices of `0..len`, in parallel, the results
/// concatenated in range order: an elementwise or row-wise op whose units write disjoint outputs.
pub(crate) fn concat_blocks<R: Send + Sync + Copy>(
    len: usize,
    block: usize,
    f: impl Fn(std::ops::Range<usize>) -> Vec<R> + Sync + Send,
) -> Vec<R> {
    let block = block.max(1);
    let units = len.div_ceil(block);
    if units <= 1 {
        return f(0..len);
    }
    concat_parallel(map_units(units, |u| {
        f(u * block..((u + 1) * block).min(len))
    }))
}

/// `parts` concatenated in order, copied into the new vector on the pool's threads (one part
/// per unit): the copy and the first touch of the output's pages are not left to the calling
/// thread, where they were the largest serial cost of a training step (issue 23's profile).
pub(crate) fn concat_parallel<R: Send + Sync + Copy>(mut parts: Vec<Vec<R>>) -> Vec<R> {
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let len = parts.iter().map(Vec::len).sum();
    let mut out: Vec<R> = Vec::with_capacity(len);
    {
        let mut spare = &mut out.spare_capacity_mut()[..len];
        let mut targets = Vec::with_capacity(parts.len());
        for part in &parts {
            let (target, rest) = std::mem::take(&mut spare).split_at_mut(part.len());
            targets.push(target);
            spare = rest;
        }
        targets
            .into_par_iter()
            .zip(parts.par_iter())
            .for_each(|(target, part)| {
                // SAFETY: `target` and `part` have the same length (split above), and a fresh
                // allocation's spare capacity cannot overlap a part.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        part.as_ptr(),
                        target.as_mut_ptr().cast::<R>(),
                        part.len(),
                    )
                };
            });
    }
    // SAFETY: the targets tile `0..len` of the capacity and each was written in full above.
    unsafe { out.set_len(len) };
    out
}

/// A vector of `len` copies of `value`, written on the pool's threads in fixed blocks.
pub(crate) fn filled<R: Send + Sync + Copy>(len: usize, value: R) -> Vec<R> {
    if len <= ELEMENTS_PER_UNIT {
        return vec![value; len];
    }
    let mut out: Vec<R> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(ELEMENTS_PER_UNIT)
        .for_each(|block| {
            for slot in block {
                slot.write(value);
            }
        });
    // SAFETY: the blocks tile `0..len` of the capacity and every slot was written above.
    unsafe { out.set_len(len) };
    out
}

/// `out[i] = f(a[i], b[i])`-style ops in parallel over fixed blocks of `out`.
pub(crate) fn elementwise<R: Send + Sync + Copy>(
    len: usize,
    f: impl Fn(std::ops::Range<usize>) -> Vec<R> + Sync + Send,
) -> Vec<R> {
    concat_blocks(len, ELEMENTS_PER_UNIT, f)
}

/// Adds per-unit partial sums in unit order: `Σ_u partials[u]` elementwise (the first partial
/// is the start, so one unit gives its partial unchanged).
pub(crate) fn sum_in_order<F: num_traits::Float>(partials: &[Vec<F>], len: usize) -> Vec<F> {
    let mut sum = match partials.first() {
        Some(first) => first.clone(),
        None => return vec![F::zero(); len],
    };
    for partial in &partials[1..] {
        for (s, &p) in sum.iter_mut().zip(partial) {
            *s = *s + p;
        }
    }
    sum
}
