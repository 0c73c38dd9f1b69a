//! The emulator itself (`emulator/include/cuda_emulator.h`): its scheduler keeps each CUDA
//! thread's identity across barriers and warp shuffles, lets threads that return early drop out
//! of both barriers, and, with fibers, fails a launch whose threads all wait at barriers that
//! the others never reach instead of hanging. The kernels are `emulator/selftest/selftest.cpp`.
mod common;

use std::ffi::c_void;

/// Runs a self-test kernel on `out`.
fn run(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    out: &mut [u32],
    more: &mut [u32],
) -> Result<(), String> {
    let mut out_pointer = out.as_mut_ptr();
    let mut args: Vec<*mut c_void> = vec![&mut out_pointer as *mut *mut u32 as *mut c_void];
    for value in more.iter_mut() {
        args.push(value as *mut u32 as *mut c_void);
    }
    // SAFETY: the self-test kernels take (unsigned* out[, unsigned]) and write at most
    // 3 · blocks · blockDim.x values of out, which the callers size.
    unsafe { asif_emulator::launch_selftest(name, grid, block, 0, &args) }
}

const UNTOUCHED: u32 = 0xDEAD_BEEF;

/// Blocks of 96 threads (three warps, the last cut to 16 live lanes), 80 of them staying: each
/// reads its ring neighbour after __syncthreads, its xor-1 partner through a shuffle, and writes
/// its own threadIdx.x; the 16 that returned early write nothing and hold nobody up.
fn identity(grid: [u32; 3]) -> Result<Vec<u32>, String> {
    let (threads, active) = (96u32, 80u32);
    let blocks = grid[0] * grid[1];
    let mut out = vec![UNTOUCHED; (3 * blocks * threads) as usize];
    run(
        "selftest_identity",
        grid,
        [threads, 1, 1],
        &mut out,
        &mut [active],
    )?;
    for block in 0..blocks {
        for t in 0..threads {
            let at = (3 * (block * threads + t)) as usize;
            let want = if t < active {
                [1000 * block + (t + 1) % active, t ^ 1, t]
            } else {
                [UNTOUCHED; 3]
            };
            assert_eq!(out[at..at + 3], want, "block {block} thread {t}");
        }
    }
    Ok(out)
}

#[test]
fn barriers_shuffles_and_early_returns_keep_each_threads_identity() {
    identity([3, 2, 1]).expect("launch");
    identity([1, 1, 1]).expect("launch");
}

#[test]
fn threads_waiting_at_barriers_no_other_thread_reaches_fail_the_launch() {
    if !asif_emulator::uses_fibers() {
        common::skip(
            "emulator deadlock test",
            "each CUDA thread is an OS thread in this build (a sanitizer): the launch would hang",
        );
        return;
    }
    let mut out = vec![UNTOUCHED; 64];
    let error = run(
        "selftest_deadlock",
        [2, 1, 1],
        [64, 1, 1],
        &mut out,
        &mut [],
    )
    .unwrap_err();
    assert_eq!(
        error,
        "deadlock in block (0, 0, 0): 64 threads wait at a barrier that the others never reach"
    );
    assert!(
        out.iter().all(|&v| v == UNTOUCHED),
        "no thread got past its barrier"
    );
    // The emulator is not left wedged: the next launch runs.
    identity([2, 1, 1]).expect("a launch after the deadlock");
}
