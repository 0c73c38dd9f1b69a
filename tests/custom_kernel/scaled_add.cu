// scaled_add.cu: a kernel family of "another crate" (tests/custom_op.rs plays that crate), not one
// of this crate's: it is registered at run time with asif_kernels::kernels::register, compiled by
// NVRTC on a CUDA device and, for the emulated device, by g++ with emulator/include/cuda_emulator.h
// (tests/custom_kernel/emulated.cpp). See docs/interop.md, "Adding your own kernel".
//
//   custom_scaled_add         out = a + alpha · b
//   custom_scaled_add_assign  y += alpha · x   (in place)
//
// Launch shape: any 1-D grid (the loop is the crate's v2 grid-stride loop, asif_map_v2 of
// vector_io.cuh, which this file includes to show that the crate's headers are available);
// tests/custom_op.rs launches 256 threads per block, LaunchConfig::grid_stride.
#include "common.cuh"
#include "vector_io.cuh"

extern "C" __global__ void custom_scaled_add(const float* __restrict__ a, const float* __restrict__ b,
                                             float* __restrict__ out, float alpha, int len) {
    asif_map_v2(a, b, out, len, [alpha](float u, float v, long long) { return u + alpha * v; });
}

// y may not be __restrict__: asif_map_v2 reads it as `a` and writes it as `out`.
extern "C" __global__ void custom_scaled_add_assign(float* y, const float* __restrict__ x, float alpha, int len) {
    asif_map_v2(y, x, y, len, [alpha](float u, float v, long long) { return u + alpha * v; });
}
