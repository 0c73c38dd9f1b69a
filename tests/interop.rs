//! Linked from another trainer (docs/interop.md): memory lent to tensors and taken back without a
//! copy, a device on the caller's stream, the prelude and the `reference` names, the `Send`/`Sync`
//! promises, and `examples/external_trainer.rs` run on the emulator (and on the GPU when there is
//! one).
mod common;

#[path = "../examples/external_trainer.rs"]
#[allow(dead_code)]
mod external_trainer;

use asif_kernels::device::{Buffer, CounterSnapshot};
use asif_kernels::ops;
use asif_kernels::prelude::*;

// ---- Send / Sync, as src/lib.rs ("Threads") promises -------------------------------------------

fn assert_send_sync<T: Send + Sync>() {}

/// Compiles only when `T` is not `Send`: with `T: Send` both impls apply and the call below is
/// ambiguous (the `static_assertions::assert_not_impl_any` trick).
trait AmbiguousIfSend<A> {
    fn not_send() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
struct IfSend;
impl<T: ?Sized + Send> AmbiguousIfSend<IfSend> for T {}

/// The same for `Sync`.
trait AmbiguousIfSync<A> {
    fn not_sync() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
struct IfSync;
impl<T: ?Sized + Sync> AmbiguousIfSync<IfSync> for T {}

#[test]
fn public_types_are_send_and_sync_as_documented_and_the_tape_is_neither() {
    assert_send_sync::<Device>();
    assert_send_sync::<Tensor>();
    assert_send_sync::<IndexTensor>();
    assert_send_sync::<Buffer<f32>>();
    assert_send_sync::<Buffer<i32>>();
    assert_send_sync::<Counters>();
    assert_send_sync::<CounterSnapshot>();
    assert_send_sync::<Error>();
    assert_send_sync::<Var>();
    assert_send_sync::<Gradients>();
    assert_send_sync::<Adam>();
    assert_send_sync::<AttentionInputs>();
    assert_send_sync::<AttentionOutputs>();
    assert_send_sync::<AttentionSaved>();
    assert_send_sync::<AttentionGradients>();
    assert_send_sync::<HieSaved>();
    assert_send_sync::<HieGradients>();
    assert_send_sync::<ContrastiveOutput>();
    assert_send_sync::<ops::source_attention::SourceAttentionOutput>();
    assert_send_sync::<ops::residual_norm::ResidualNormSaved>();
    <Tape as AmbiguousIfSend<_>>::not_send();
    <Tape as AmbiguousIfSync<_>>::not_sync();
}

// ---- the `reference` names -----------------------------------------------------------------------

#[test]
fn every_reference_is_public_as_ops_op_reference_and_the_old_names_stay() {
    let x = [-1.5f32, 0.0, 0.25, 2.0];
    let dy = [1.0f32, -2.0, 0.5, 3.0];
    assert_eq!(
        ops::gelu::reference::forward(&x),
        ops::gelu::forward_reference(&x)
    );
    assert_eq!(
        ops::relu::reference::backward(&x, &dy),
        ops::relu::backward_reference(&x, &dy)
    );
    assert_eq!(
        ops::add::reference::add(&x, &dy),
        ops::add::add_reference(&x, &dy)
    );
    // Generic over the float type (f64 for gradient checks), as before.
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    assert_eq!(ops::gelu::reference::forward(&x64).len(), 4);
    // The fused ops' reference types are reachable under the same module.
    let _: fn(
        &ops::attention::reference::Problem<'_, f32>,
    ) -> ops::attention::reference::Forward<f32> = ops::attention::reference::forward::<f32>;
    let _ = ops::hie::reference::valid_rows;
    let _ = ops::contrastive::reference::forward_backward::<f32>;
    let _ = ops::layer_norm::reference::forward::<f32>;
}

// ---- lent memory on the emulator (a fake external buffer) --------------------------------------

fn host_pointer(buffer: &Buffer<f32>) -> *const f32 {
    match buffer {
        Buffer::Host(v) => v.as_ptr(),
        Buffer::Cuda(_) => std::ptr::null(),
    }
}

#[test]
fn a_lent_host_buffer_becomes_a_tensor_and_comes_back_without_a_copy() {
    let device = common::emulated();
    let external: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let address = external.as_ptr();
    let before = device.counters().snapshot();

    let x =
        Tensor::from_device_buffer(&device, &[3, 4], Buffer::Host(external.clone())).expect("lend");
    let x_owned = Tensor::from_device_buffer(&device, &[3, 4], Buffer::Host(external))
        .expect("lend the original");
    assert_eq!(
        host_pointer(x_owned.buffer()),
        address,
        "lent without a copy"
    );
    assert_eq!(
        device.counters().snapshot().since(&before),
        CounterSnapshot::default(),
        "lending allocates and copies nothing"
    );

    // An op computes on it like on any tensor.
    let y = ops::gelu::gelu_forward(&x).expect("gelu");
    let want = ops::gelu::reference::forward(&x.to_vec().expect("x"));
    let worst = y
        .to_vec()
        .expect("y")
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "gelu on a lent buffer: {worst}");

    // Taken back: the same memory, nothing counted.
    let before = device.counters().snapshot();
    let back = x_owned.into_buffer().expect("take back");
    assert_eq!(host_pointer(&back), address, "returned without a copy");
    assert_eq!(
        device.counters().snapshot().since(&before),
        CounterSnapshot::default()
    );
}

#[test]
fn taking_back_a_shared_buffer_copies_on_the_device_and_leaves_the_sharers_intact() {
    let device = common::emulated();
    let x = Tensor::from_device_buffer(&device, &[4], Buffer::Host(vec![1.0, 2.0, 3.0, 4.0]))
        .expect("lend");
    let address = host_pointer(x.buffer());
    let sharer = x.reshape(&[2, 2]).expect("reshape shares the buffer");
    let before = device.counters().snapshot();
    let back = x.into_buffer().expect("take back");
    let counts = device.counters().snapshot().since(&before);
    assert_ne!(host_pointer(&back), address, "a shared buffer is copied");
    assert_eq!(counts.bytes_device_to_device, 16);
    assert_eq!(counts.bytes_host_to_device + counts.bytes_device_to_host, 0);
    assert_eq!(host_pointer(sharer.buffer()), address);
    assert_eq!(sharer.to_vec().expect("sharer"), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn lending_checks_the_length_and_the_device() {
    let device = common::emulated();
    let error = Tensor::from_device_buffer(&device, &[3, 4], Buffer::Host(vec![0.0f32; 11]))
        .expect_err("11 values for 12");
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    let x = Tensor::from_device_buffer(&device, &[2], Buffer::Host(vec![0.0f32; 2])).expect("lend");
    let error = x.into_cuda_slice().expect_err("not a CUDA tensor");
    assert!(matches!(error, Error::DeviceMismatch { .. }), "{error}");
}

// ---- the external trainer ------------------------------------------------------------------------

fn check_trainer(memory: &external_trainer::TrainerMemory, steps: usize) {
    let report =
        external_trainer::run(memory, external_trainer::Sizes::default(), steps).expect("run");
    assert!(
        report.max_reference_error < 1e-3,
        "{}: first step against the CPU reference: {:.2e}",
        report.device,
        report.max_reference_error
    );
    let c = report.loop_counts;
    assert_eq!(c.bytes_host_to_device, 0, "{}: {c:?}", report.device);
    assert_eq!(c.bytes_device_to_host, 0, "{}: {c:?}", report.device);
    assert!(
        c.launches > 0,
        "{}: the loop launched nothing",
        report.device
    );
    assert!(
        report.first_loss.is_finite() && report.last_loss.is_finite(),
        "{report:?}"
    );
    assert!(
        report.last_loss < report.first_loss,
        "{}: Adam on L_co did not lower it: {report:?}",
        report.device
    );
}

#[test]
fn the_external_trainer_example_runs_emulated_without_a_host_round_trip() {
    // Tier 2: left out on the GPU machine (ASIF_SKIP_EMULATED, which prints the SKIPPED line).
    if !common::kernel_devices()
        .iter()
        .any(|d| matches!(d, Device::Emulated(_)))
    {
        return;
    }
    check_trainer(
        &external_trainer::TrainerMemory::Emulated(asif_emulator::launch),
        5,
    );
}

// ---- GPU tier: the caller's own context, stream and slices -------------------------------------

#[test]
fn the_external_trainer_example_runs_on_the_gpu_on_its_own_stream() {
    if common::cuda().is_none() {
        return; // common::cuda printed the SKIPPED line
    }
    let stream = external_trainer::own_cuda_stream().expect("GPU 0 opened just now");
    check_trainer(&external_trainer::TrainerMemory::Cuda(stream), 20);
}

#[test]
fn a_device_on_the_callers_stream_launches_there_on_the_callers_slices() {
    if common::cuda().is_none() {
        return;
    }
    let stream = external_trainer::own_cuda_stream().expect("GPU 0 opened just now");
    let device = Device::from_cuda_stream(stream.clone()).expect("device on the stream");
    let Device::Cuda(backend) = &device else {
        panic!("a CUDA device");
    };
    assert_eq!(backend.stream().cu_stream(), stream.cu_stream());
    assert_ne!(
        stream.cu_stream(),
        std::ptr::null_mut(),
        "a stream of the caller's own, not the legacy default stream"
    );

    let host: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 100.0).collect();
    let slice = stream.clone_htod(&host).expect("the caller's allocation");
    let before = device.counters().snapshot();
    let x = Tensor::from_cuda_slice(&device, &[10, 100], slice).expect("lend");
    let y = ops::gelu::gelu_forward(&x).expect("gelu");
    drop(x);
    let y = y.into_cuda_slice().expect("take back");
    let counts = device.counters().snapshot().since(&before);
    assert_eq!(counts.bytes_host_to_device, 0, "{counts:?}");
    assert_eq!(counts.bytes_device_to_host, 0, "{counts:?}");
    assert_eq!(counts.bytes_device_to_device, 0, "{counts:?}");
    assert_eq!(counts.launches, 1, "{counts:?}");
    let got = stream.clone_dtoh(&y).expect("the caller reads its result");
    let want = ops::gelu::reference::forward(&host);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "gelu on the caller's slice: {worst}");

    // A slice the caller allocated on another of its streams (same context) is accepted; host
    // memory on a CUDA device is refused.
    let other_stream = stream.context().new_stream().expect("another stream");
    let same = other_stream.clone_htod(&[1.0f32; 4]).expect("alloc");
    let x = Tensor::from_cuda_slice(&device, &[4], same).expect("a slice of the same context");
    // Written on the other stream, read on the device's: cudarc's event tracking orders them.
    let y = ops::gelu::gelu_forward(&x)
        .expect("gelu")
        .to_vec()
        .expect("y");
    let want = ops::gelu::reference::forward(&[1.0f32; 4]);
    assert!(
        y.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-6),
        "{y:?} against {want:?}"
    );
    let error = Tensor::from_device_buffer(&device, &[4], Buffer::Host(vec![0.0f32; 4]))
        .expect_err("host memory on a CUDA device");
    assert!(matches!(error, Error::DeviceMismatch { .. }), "{error}");
}
