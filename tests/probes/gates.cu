// gates.cu: probe kernels for the SASS gates of the NVRTC tier (tests/nvrtc.rs). Not a crate
// kernel: it lives outside kernels/, so neither build.rs nor the emulator builds it; the test
// compiles it with NVRTC exactly as build.rs compiles kernels/*.cu (build_support/nvrtc.rs) and
// reads its sm_90 SASS with cuobjdump.
//
// Each gate has a probe that breaks it (the test asserts that gate, and only it, fails) and a
// probe that keeps the same declaration (the test asserts it passes), so a gate can neither be
// always-passing nor always-failing.
//
// Gates:
//   asif-gate: probe_stack_frame block=256 occupancy>=50%
//   asif-gate: probe_allowed_stack_frame block=256 occupancy>=50% stack=128 why="the probe that keeps its allow-list"
//   asif-gate: probe_stale_stack_allow_list block=256 occupancy>=50% stack=128 why="a stale allow-list: the kernel has no stack frame"
//   asif-gate: probe_low_occupancy block=128 occupancy>=50%
//   asif-gate: probe_occupancy_kept block=128 occupancy>=25%
//   asif-gate: probe_tensor_core_without_mma block=256 occupancy>=50% tensor_core
//   asif-gate: probe_tensor_core_mma block=32 occupancy>=25% tensor_core
//   asif-gate: probe_vector_io_scalar block=256 occupancy>=50% vector_io
//   asif-gate: probe_vector_io_float4 block=256 occupancy>=50% vector_io

#define PROBE_LOCAL 32
#define PROBE_TILE 12288  // floats: 48 KiB, the most static shared memory a kernel may have

// An array indexed at run time in a loop cannot live in registers: ptxas gives it a stack frame
// in local memory (STL to fill it, LDL to read it), as v1 attention_forward's sx/sa/sp[2].
__device__ __forceinline__ float probe_pick(const float* __restrict__ x, const int* __restrict__ index,
                                            int i) {
    float local[PROBE_LOCAL];
#pragma unroll
    for (int k = 0; k < PROBE_LOCAL; ++k) local[k] = x[i * PROBE_LOCAL + k];
    float sum = 0.0f;
    for (int k = 0; k < index[0]; ++k) sum += local[index[k + 1] & (PROBE_LOCAL - 1)];
    return sum;
}

extern "C" __global__ void probe_stack_frame(const float* __restrict__ x, const int* __restrict__ index,
                                             float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = probe_pick(x, index, i);
}

extern "C" __global__ void probe_allowed_stack_frame(const float* __restrict__ x,
                                                     const int* __restrict__ index,
                                                     float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = probe_pick(x, index, i);
}

extern "C" __global__ void probe_stale_stack_allow_list(const float* __restrict__ x,
                                                        float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i];
}

// 48 KiB of static shared memory + the 1 KiB sm_90 reserves per block: 4 blocks of 128 threads
// per SM, 16 of 64 warps (25 %).
__device__ __forceinline__ void probe_tile(float* tile, const float* __restrict__ x,
                                           float* __restrict__ y, int n) {
    for (int k = threadIdx.x; k < PROBE_TILE; k += blockDim.x) tile[k] = x[k];
    __syncthreads();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = tile[(i * 7) % PROBE_TILE];
}

extern "C" __global__ void probe_low_occupancy(const float* __restrict__ x, float* __restrict__ y, int n) {
    __shared__ float tile[PROBE_TILE];
    probe_tile(tile, x, y, n);
}

extern "C" __global__ void probe_occupancy_kept(const float* __restrict__ x, float* __restrict__ y, int n) {
    __shared__ float tile[PROBE_TILE];
    probe_tile(tile, x, y, n);
}

extern "C" __global__ void probe_tensor_core_without_mma(const float* __restrict__ x,
                                                         float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = fmaf(x[i], x[i], 1.0f);
}

// One warp, one m16n8k8 TF32 tensor-core product (PTX ISA mma.sync; the fragment layout does not
// matter to the gate, only that the SASS has an HMMA).
extern "C" __global__ void probe_tensor_core_mma(const float* __restrict__ a, const float* __restrict__ b,
                                                 float* __restrict__ c) {
    const int lane = threadIdx.x % 32;
    const unsigned a0 = __float_as_uint(a[lane]), a1 = __float_as_uint(a[lane + 32]);
    const unsigned a2 = __float_as_uint(a[lane + 64]), a3 = __float_as_uint(a[lane + 96]);
    const unsigned b0 = __float_as_uint(b[lane]), b1 = __float_as_uint(b[lane + 32]);
    float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    c[lane] = d0;
    c[lane + 32] = d1;
    c[lane + 64] = d2;
    c[lane + 96] = d3;
}

extern "C" __global__ void probe_vector_io_scalar(const float* __restrict__ x, float* __restrict__ y,
                                                  int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i];
}

extern "C" __global__ void probe_vector_io_float4(const float4* __restrict__ x, float4* __restrict__ y,
                                                  int n4) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n4) {
        float4 v = x[i];
        v.x *= 2.0f;
        v.y *= 2.0f;
        v.z *= 2.0f;
        v.w *= 2.0f;
        y[i] = v;
    }
}
