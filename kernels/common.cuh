// common.cuh: helpers shared by every kernel family.
//
// Compiled three ways: by NVRTC for the GPU (build.rs), by NVRTC at run time from the embedded
// source when the build had no NVRTC, and by g++ for the host through the emulator header
// (emulator/include/cuda_emulator.h, force-included before this file). NVRTC has no libc
// headers, so nothing here includes one.
#pragma once
#include "hash_rng.cuh"

// Dynamic shared memory, declared the same way on the GPU and in the emulator.
#ifndef ASIF_DYNAMIC_SHARED
#define ASIF_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

#define ASIF_WARP_SIZE 32
#define ASIF_FULL_MASK 0xffffffffu

// +infinity without <math.h>.
__device__ __forceinline__ float asif_infinity() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ float warp_reduce_sum(float value) {
#pragma unroll
    for (int offset = ASIF_WARP_SIZE / 2; offset > 0; offset /= 2) {
        value += __shfl_xor_sync(ASIF_FULL_MASK, value, offset);
    }
    return value;
}

__device__ __forceinline__ float warp_reduce_max(float value) {
#pragma unroll
    for (int offset = ASIF_WARP_SIZE / 2; offset > 0; offset /= 2) {
        value = fmaxf(value, __shfl_xor_sync(ASIF_FULL_MASK, value, offset));
    }
    return value;
}

// Sum over the whole block; every thread gets the result. blockDim.x must be a multiple of 32
// (launchers guarantee it) and every thread of the block must call it. `scratch` holds 32 floats
// of shared memory; it is safe to reuse right after the call returns.
__device__ __forceinline__ float block_reduce_sum(float value, float* scratch) {
    const int lane = threadIdx.x % ASIF_WARP_SIZE;
    const int warp = threadIdx.x / ASIF_WARP_SIZE;
    const int warps = blockDim.x / ASIF_WARP_SIZE;
    value = warp_reduce_sum(value);
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    float total = lane < warps ? scratch[lane] : 0.0f;
    total = warp_reduce_sum(total);
    __syncthreads();  // everyone has read scratch before a caller reuses it
    return total;
}
