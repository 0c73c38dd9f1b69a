// vector_io.cuh: 128-bit global loads and stores, and the v2 elementwise loop built on them
// (issue 19; used by gelu.cu, relu.cu, dropout.cu, elementwise.cu, layer_norm.cu, residual_norm.cu).
//
// asif_float4 is CUDA's float4 on the GPU (a 16-byte aligned struct, so a load through an aligned
// pointer is one LDG.E.128 and a store one STG.E.128) and an equal struct in the emulator, whose
// header has no CUDA vector types.
//
// The v2 elementwise loop (asif_map_v2): each thread of a grid-stride loop handles
// ASIF_V2_LOADS_PER_THREAD / inputs float4 per step (4 for one input, 2 for two: four 128-bit
// loads in flight per thread either way, all issued before any store), then a scalar tail for the
// last len % 4 elements.
// When any pointer is not 16-byte aligned the whole range takes the scalar path (still correct;
// buffers from the device allocator are always aligned, so this is for sub-views).
// Element i of the output is f(a[i], b[i], i) in both paths, so results do not depend on the
// path, and i is the global element index (the dropout mask's counter).
//
// Occupancy: the 4 float4 held per thread cost registers (docs/kernels-sass.md), so the v2
// kernels run at 62 to 75 % theoretical occupancy instead of v1's 100 %. That is enough for a
// streaming kernel by Little's law: an H200 needs about 4.8 TB/s × ~0.6 µs ≈ 2.9 MB in flight,
// 22 KB per SM, and 40 warps × 32 lanes × 4 × 16 B = 80 KB per SM (at
// 62.5 %) are in flight here. The gates pin the occupancy each kernel has now.
// (To trade registers for occupancy, __launch_bounds__ may go between `void` and the kernel's
// name; build_support/kernel_sources.rs reads that form, docs/architecture.md.)
#pragma once

#ifdef ASIF_EMULATOR
struct __align__(16) asif_float4 {
    float x, y, z, w;
};
#else
typedef float4 asif_float4;
#endif

// 128-bit loads in flight per thread and step; the launcher's grid (src/ops/mod.rs,
// vector_launch) covers len in one step: 16 elements per thread for one input, 8 for two.
#define ASIF_V2_LOADS_PER_THREAD 4
#define ASIF_V2_BLOCK 256

__device__ __forceinline__ bool asif_aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

__device__ __forceinline__ asif_float4 asif_load4(const float* p) {
    return *reinterpret_cast<const asif_float4*>(p);
}

__device__ __forceinline__ void asif_store4(float* p, asif_float4 v) {
    *reinterpret_cast<asif_float4*>(p) = v;
}

// out[i] = f(a[i], b[i], i) for i < len, VECTORS float4 of each input per thread and step. `b` is
// null for one-input ops (f then gets 0 for it); `out` may be `a` (add_assign): each element is
// read before it is written, by the same thread.
template <int VECTORS, typename F>
__device__ __forceinline__ void asif_map_v2_vectors(const float* a, const float* b, float* out, int len, F f) {
    const bool aligned = asif_aligned16(a) && asif_aligned16(out) && (b == nullptr || asif_aligned16(b));
    const int vectors = aligned ? len / 4 : 0;
    const int threads = (int)(blockDim.x * gridDim.x);
    const int first = (int)(blockIdx.x * blockDim.x * VECTORS + threadIdx.x);
    for (int base = first; base < vectors; base += threads * VECTORS) {
        asif_float4 va[VECTORS];
        asif_float4 vb[VECTORS];
#pragma unroll
        for (int k = 0; k < VECTORS; ++k) {
            const int v = base + k * (int)blockDim.x;
            if (v < vectors) {
                va[k] = asif_load4(a + 4 * (long long)v);
                if (b != nullptr) vb[k] = asif_load4(b + 4 * (long long)v);
            }
        }
#pragma unroll
        for (int k = 0; k < VECTORS; ++k) {
            const int v = base + k * (int)blockDim.x;
            if (v < vectors) {
                const long long i = 4 * (long long)v;
                asif_float4 r;
                const bool has_b = b != nullptr;
                r.x = f(va[k].x, has_b ? vb[k].x : 0.0f, i);
                r.y = f(va[k].y, has_b ? vb[k].y : 0.0f, i + 1);
                r.z = f(va[k].z, has_b ? vb[k].z : 0.0f, i + 2);
                r.w = f(va[k].w, has_b ? vb[k].w : 0.0f, i + 3);
                asif_store4(out + i, r);
            }
        }
    }
    // Scalar tail: the last len % 4 elements, or everything when a pointer is misaligned.
    for (long long i = 4 * (long long)vectors + blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += threads) {
        out[i] = f(a[i], b != nullptr ? b[i] : 0.0f, i);
    }
}

// One input (b null): 4 vectors per thread and step. Two inputs: 2 of each.
template <typename F>
__device__ __forceinline__ void asif_map_v2(const float* a, float* out, int len, F f) {
    asif_map_v2_vectors<ASIF_V2_LOADS_PER_THREAD>(a, nullptr, out, len, f);
}

template <typename F>
__device__ __forceinline__ void asif_map_v2(const float* a, const float* b, float* out, int len, F f) {
    asif_map_v2_vectors<ASIF_V2_LOADS_PER_THREAD / 2>(a, b, out, len, f);
}
