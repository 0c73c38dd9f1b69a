//! The caching allocator (`src/device/cache.rs`, issue 20) on the emulated device, which shares
//! its code with the CUDA device: a dropped buffer is reused by the next allocation of its size
//! (counted as an allocation, not a fresh one), a reused buffer is poisoned (or zeroed) as a fresh
//! one is, a buffer still referenced is never handed out again, and memory that leaves the crate
//! does not come back. The GPU tier runs the same bodies on CUDA (`common::kernel_devices`).
mod common;

use asif_kernels::device::{Buffer, CounterSnapshot, GraphRun};
use asif_kernels::{Device, Tensor};

fn counted<R>(device: &Device, f: impl FnOnce() -> R) -> (R, CounterSnapshot) {
    let before = device.counters().snapshot();
    let result = f();
    (result, device.counters().snapshot().since(&before))
}

/// The kernel devices, each with a cache of its own (a CUDA device opened for the test, in the
/// poison mode): the tests run in parallel and read the cache's totals.
fn devices() -> Vec<Device> {
    common::kernel_devices()
        .into_iter()
        .map(|device| match device {
            Device::Cuda(_) => {
                let own = Device::cuda(0).expect("GPU 0 opened once already");
                own.set_poison_uninitialized(true);
                own
            }
            other => other,
        })
        .collect()
}

#[test]
fn a_dropped_buffer_is_reused_by_the_next_allocation_of_its_size() {
    for device in devices() {
        let (first, counts) = counted(&device, || device.uninitialized::<f32>(1001).unwrap());
        assert_eq!((counts.allocations, counts.fresh_allocations), (1, 1));
        drop(first);
        let cache = device.memory_cache().expect("a kernel device caches");
        assert_eq!(cache.cached_bytes(), 4004, "{}", device.name());
        let (second, counts) = counted(&device, || device.uninitialized::<f32>(1001).unwrap());
        assert_eq!(
            (
                counts.allocations,
                counts.fresh_allocations,
                counts.bytes_allocated
            ),
            (1, 0, 4004),
            "{}: the second allocation should come from the cache",
            device.name()
        );
        assert_eq!(cache.cached_bytes(), 0);
        // Another size is fresh.
        let (_other, counts) = counted(&device, || device.uninitialized::<f32>(1002).unwrap());
        assert_eq!(counts.fresh_allocations, 1);
        drop(second);
        device.empty_cache();
        assert_eq!(cache.cached_bytes(), 0);
        let (_, counts) = counted(&device, || device.uninitialized::<f32>(1001).unwrap());
        assert_eq!(counts.fresh_allocations, 1, "emptied: nothing to reuse");
    }
}

#[test]
fn a_reused_buffer_is_poisoned_or_zeroed_like_a_fresh_one() {
    for device in devices() {
        let written = Tensor::from_vec(&device, &[3, 337], vec![1.5f32; 1011]).unwrap();
        drop(written);
        let (buffer, counts) = counted(&device, || device.uninitialized::<f32>(1011).unwrap());
        assert_eq!(counts.fresh_allocations, 0, "{}: reused", device.name());
        let host = device.download(&buffer).unwrap();
        assert!(
            host.iter().all(|v| v.is_nan()),
            "{}: a reused uninitialised buffer must hold the poison, not its last values",
            device.name()
        );
        let mut ids = device.upload(&[7i32; 1013]).unwrap();
        drop(std::mem::replace(&mut ids, device.upload(&[1i32]).unwrap()));
        let ids: Buffer<i32> = device.uninitialized(1013).unwrap();
        assert_eq!(device.download(&ids).unwrap(), vec![i32::MIN; 1013]);
        drop(ids);
        let (zeros, counts) = counted(&device, || device.zeros::<i32>(1013).unwrap());
        assert_eq!((counts.fresh_allocations, counts.memsets), (0, 1));
        assert_eq!(device.download(&zeros).unwrap(), vec![0; 1013]);
    }
}

#[test]
fn a_buffer_still_referenced_is_never_handed_out_again() {
    for device in devices() {
        let x = Tensor::from_vec(&device, &[1019], vec![2.0f32; 1019]).unwrap();
        let kept = x.reshape(&[1, 1019]).unwrap();
        drop(x);
        // `kept` shares the buffer: it did not go back, so this allocation is fresh.
        let (y, counts) = counted(&device, || device.uninitialized::<f32>(1019).unwrap());
        assert_eq!(counts.fresh_allocations, 1, "{}", device.name());
        assert_eq!(kept.to_vec().unwrap(), vec![2.0; 1019]);
        drop(y);
        drop(kept);
        let (_, counts) = counted(&device, || device.uninitialized::<f32>(1019).unwrap());
        assert_eq!(counts.fresh_allocations, 0, "both are back now");
    }
}

#[test]
fn memory_that_leaves_the_crate_does_not_come_back_and_types_do_not_mix() {
    let device = common::emulated();
    let cache = device.memory_cache().expect("emulated caches").clone();
    let t = Tensor::from_vec(&device, &[1021], vec![3.0f32; 1021]).unwrap();
    let vector = t.into_buffer().unwrap().into_host_vec().unwrap();
    drop(vector);
    assert_eq!(
        cache.cached_bytes(),
        0,
        "the caller's vector is not the cache's"
    );
    // An f32 block is not handed out as i32 memory on the host (its allocation's layout).
    drop(device.uninitialized::<f32>(1031).unwrap());
    let (ids, counts) = counted(&device, || device.uninitialized::<i32>(1031).unwrap());
    assert_eq!(counts.fresh_allocations, 1);
    assert_eq!(
        cache.cached_bytes(),
        4 * 1031,
        "the f32 block is still cached"
    );
    drop(ids);
    assert_eq!(cache.cached_bytes(), 8 * 1031, "both blocks are cached");
    // The CPU reference device does not cache.
    assert!(Device::cpu().memory_cache().is_none());
}

#[test]
fn a_captured_steps_blocks_stay_reserved_for_its_graph_until_it_drops() {
    // Issue 20 (graph replay): the blocks a captured step took from the cache (here the emulated
    // device's `run_step_graph`, which runs the step eagerly under the capture's refusals and
    // reserves as a capture does) are kept for its graph: not handed to a later allocation of
    // their size (an evaluation between epochs), not freed by `empty_cache`, whether they came
    // back during the step (scratch) or after it (the step's outputs, dropped later); dropping
    // the graph gives them back.
    let Some(device) = common::emulated_unless_skipped() else {
        return;
    };
    let cache = device.memory_cache().expect("emulated caches").clone();
    // The step's sizes, cached by an eager run (a capture may not allocate fresh memory).
    drop(device.uninitialized::<f32>(1033).unwrap());
    drop(device.uninitialized::<f32>(1039).unwrap());
    // Not the step's: stays free.
    drop(device.uninitialized::<f32>(1049).unwrap());
    let mut graph = None;
    let ((scratch_address, output), run) = device
        .run_step_graph(&mut graph, || {
            let scratch = device.uninitialized::<f32>(1033)?;
            let address = scratch.address();
            drop(scratch);
            Ok((address, device.uninitialized::<f32>(1039)?))
        })
        .unwrap();
    assert_eq!(run, GraphRun::Eager, "the emulated device has no graphs");
    assert!(graph.is_some(), "the reservation's holder");
    assert_eq!(cache.reserved_bytes(), 4 * 1033, "the scratch block");
    assert_eq!(
        cache.cached_bytes(),
        4 * 1049,
        "only the block the step did not take"
    );
    let output_address = output.address();
    drop(output);
    assert_eq!(cache.reserved_bytes(), 4 * (1033 + 1039), "the output too");
    device.empty_cache();
    assert_eq!(
        cache.reserved_bytes(),
        4 * (1033 + 1039),
        "not freed under the graph"
    );
    for (len, reserved) in [(1033, scratch_address), (1039, output_address)] {
        let (other, counts) = counted(&device, || device.uninitialized::<f32>(len).unwrap());
        assert_eq!(
            counts.fresh_allocations, 1,
            "{len}: the reserved block is not handed out"
        );
        assert_ne!(other.address(), reserved);
    }
    drop(graph);
    assert_eq!(cache.reserved_bytes(), 0);
    device.empty_cache();
    // A new "capture" of a step cached once more.
    let mut graph = None;
    drop(device.uninitialized::<f32>(1033).unwrap());
    let (address, _) = device
        .run_step_graph(&mut graph, || {
            Ok(device.uninitialized::<f32>(1033)?.address())
        })
        .unwrap();
    assert_eq!(cache.reserved_bytes(), 4 * 1033);
    // A recapture releases the previous reservation first and reserves what it takes again.
    let (again, _) = device
        .run_step_graph(&mut graph, || {
            Ok(device.uninitialized::<f32>(1033)?.address())
        })
        .unwrap();
    assert_eq!(
        again, address,
        "the recapture took the released block, nothing fresh"
    );
    assert_eq!(cache.reserved_bytes(), 4 * 1033);
    drop(graph);
    assert_eq!(
        (cache.reserved_bytes(), cache.cached_bytes()),
        (0, 4 * 1033)
    );
}
