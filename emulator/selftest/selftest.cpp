// Kernels that test the emulator itself (tests/emulator.rs), compiled by emulator/build.rs with
// cuda_emulator.h force-included, like the crate's kernels, and exported as their own family.

// Each thread publishes a value, threads at or past `active` return (dropping out of both
// barriers), the others read their ring neighbour's value after __syncthreads and their xor-1
// partner's index through a warp shuffle. out[3·(block·n + t) + {0, 1, 2}] = neighbour's value,
// partner's index, the thread's own threadIdx.x; n = blockDim.x (at most 1024).
__global__ void selftest_identity(unsigned* out, unsigned active) {
    __shared__ unsigned ring[1024];
    const unsigned n = blockDim.x;
    const unsigned t = threadIdx.x;
    const unsigned block = blockIdx.x + gridDim.x * blockIdx.y;
    ring[t] = 1000u * block + t;
    if (t >= active) return;
    __syncthreads();
    const unsigned neighbour = ring[(t + 1) % active];
    const unsigned partner = __shfl_xor_sync(0xffffffffu, t, 1);
    out[3 * (block * n + t) + 0] = neighbour;
    out[3 * (block * n + t) + 1] = partner;
    out[3 * (block * n + t) + 2] = threadIdx.x;
}

// Thread 0 waits at its warp's barrier, every other thread at the block's: no barrier can
// complete. On the GPU this is undefined (it hangs); the fibered emulator fails the launch.
__global__ void selftest_deadlock(unsigned* out) {
    if (threadIdx.x == 0) {
        __syncwarp();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1u;
}

ASIF_EMU_EXPORT_FAMILY(asif_emu_selftest, ASIF_EMU_ENTRY(selftest_identity), ASIF_EMU_ENTRY(selftest_deadlock))

// 1 when blocks run as fibers, 0 when each CUDA thread is an OS thread (sanitizer builds).
extern "C" int asif_emu_fibers() { return ASIF_EMULATOR_FIBERS; }
