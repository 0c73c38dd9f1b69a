// cuda_emulator.h: lets one .cu kernel file compile with g++ (C++20) and run on the host.
//
// Test-only (never built for users of the crate). The model:
//   - one OS thread per CUDA thread; the blocks of a launch run one after another, so
//     `__shared__` variables can be plain `static` ones;
//   - threadIdx/blockIdx/blockDim/gridDim are thread_local;
//   - __syncthreads() is a std::barrier over the block, warp operations (__shfl_*_sync,
//     __ballot_sync, __syncwarp) go through a per-warp exchange buffer and a per-warp barrier;
//   - a thread that returns early drops out of both barriers (arrive_and_drop), as on the GPU;
//   - atomics through std::atomic_ref; dynamic shared memory through ASIF_DYNAMIC_SHARED,
//     filled with 0xFF bytes (NaN as float) at each block so reads before writes show up;
//   - one launch at a time in the process (a mutex), so parallel tests are safe.
// What it cannot see: races between blocks, warp-synchronous code that relies on lockstep
// without __syncwarp, timing, and memory-model subtleties of the real GPU. Those need the GPU.
//
// A ThreadSanitizer build (scripts/emulator-sanitize.sh) turns a missing __syncthreads() into
// a reported data race.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define ASIF_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define ASIF_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::emu::dynamic_shared())

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
static constexpr int warpSize = 32;

namespace emu {

struct Warp {
    std::unique_ptr<std::barrier<>> barrier;
    unsigned size = 0;
    std::uint64_t exchange[32] = {};
};

struct Block {
    std::unique_ptr<std::barrier<>> barrier;
    std::vector<Warp> warps;
    std::vector<unsigned char> shared;
};

inline Block* current_block = nullptr;
inline thread_local unsigned lane_id = 0;
inline thread_local unsigned warp_id = 0;

inline void* dynamic_shared() {
    auto address = reinterpret_cast<std::uintptr_t>(current_block->shared.data());
    return reinterpret_cast<void*>((address + 15) & ~std::uintptr_t(15));
}

inline Warp& my_warp() { return current_block->warps[warp_id]; }

// Every active lane publishes `value`, then reads lane `source`'s (its own where `source` is
// outside the warp), then waits again so the buffer is not overwritten before all have read.
template <typename T>
T exchange(T value, int source) {
    static_assert(sizeof(T) <= 8, "warp exchange of values up to 8 bytes");
    Warp& warp = my_warp();
    std::uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    warp.exchange[lane_id] = bits;
    warp.barrier->arrive_and_wait();
    std::uint64_t got = (source >= 0 && source < (int)warp.size) ? warp.exchange[source] : bits;
    warp.barrier->arrive_and_wait();
    T result;
    std::memcpy(&result, &got, sizeof(T));
    return result;
}

}  // namespace emu

inline void __syncthreads() { emu::current_block->barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::my_warp().barrier->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
T __shfl_sync(unsigned, T value, int source_lane, int width = 32) {
    const int lane = (int)emu::lane_id;
    return emu::exchange(value, (lane & ~(width - 1)) + (source_lane % width));
}
template <typename T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int width = 32) {
    const int lane = (int)emu::lane_id;
    const int source = lane ^ lane_mask;
    return emu::exchange(value, (source / width == lane / width) ? source : lane);
}
template <typename T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int width = 32) {
    const int lane = (int)emu::lane_id;
    return emu::exchange(value, (lane % width) + (int)delta < width ? lane + (int)delta : lane);
}
template <typename T>
T __shfl_up_sync(unsigned, T value, unsigned delta, int width = 32) {
    const int lane = (int)emu::lane_id;
    return emu::exchange(value, (lane % width) >= (int)delta ? lane - (int)delta : lane);
}
inline unsigned __ballot_sync(unsigned, int predicate) {
    emu::Warp& warp = emu::my_warp();
    warp.exchange[emu::lane_id] = predicate ? 1 : 0;
    warp.barrier->arrive_and_wait();
    unsigned bits = 0;
    for (unsigned lane = 0; lane < warp.size; ++lane) bits |= (warp.exchange[lane] ? 1u : 0u) << lane;
    warp.barrier->arrive_and_wait();
    return bits;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) {
    const unsigned active = emu::my_warp().size == 32 ? 0xffffffffu : ((1u << emu::my_warp().size) - 1u);
    return __ballot_sync(mask, predicate) == active;
}

// Atomics.
template <typename T>
T atomicAdd(T* address, T value) { return std::atomic_ref<T>(*address).fetch_add(value); }
template <typename T>
T atomicExch(T* address, T value) { return std::atomic_ref<T>(*address).exchange(value); }
template <typename T>
T atomicCAS(T* address, T expected, T desired) {
    std::atomic_ref<T>(*address).compare_exchange_strong(expected, desired);
    return expected;
}
template <typename T>
T atomicMax(T* address, T value) {
    std::atomic_ref<T> ref(*address);
    T old = ref.load();
    while (old < value && !ref.compare_exchange_weak(old, value)) {}
    return old;
}
template <typename T>
T atomicMin(T* address, T value) {
    std::atomic_ref<T> ref(*address);
    T old = ref.load();
    while (value < old && !ref.compare_exchange_weak(old, value)) {}
    return old;
}

// Device math that the host library spells differently or lacks.
// CUDA's integer min/max accept mixed operand types; std::min does not.
template <typename A, typename B>
std::common_type_t<A, B> min(A a, B b) { return b < a ? b : a; }
template <typename A, typename B>
std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Round-to-nearest product that the GPU compiler may not fuse into an FMA. The emulator (g++,
// x86-64 baseline, no FMA) never fuses, so every product is already rounded here.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float x) { return std::min(1.0f, std::max(0.0f, x)); }
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline int __float_as_int(float f) { int bits; std::memcpy(&bits, &f, 4); return bits; }
inline unsigned __float_as_uint(float f) { unsigned bits; std::memcpy(&bits, &f, 4); return bits; }
inline float __uint_as_float(unsigned bits) { float f; std::memcpy(&f, &bits, 4); return f; }
template <typename T>
T __ldg(const T* address) { return *address; }

namespace emu {

using Thunk = void (*)(void**);

struct KernelEntry {
    const char* name;
    Thunk thunk;
};

// Calls a kernel with CUDA's argument convention: args[i] points at the i-th argument's value.
template <typename... A, std::size_t... I>
void invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <typename... A>
void invoke(void (*kernel)(A...), void** args) {
    invoke(kernel, args, std::index_sequence_for<A...>{});
}
template <auto Kernel>
void thunk(void** args) {
    invoke(Kernel, args);
}

inline std::mutex& launch_mutex() {
    static std::mutex mutex;
    return mutex;
}

// Runs grid × block threads: blockDim threads live for the whole launch and run the blocks in
// order. Returns 0, or writes a reason into `error` and returns 1.
inline int launch(Thunk kernel, dim3 grid, dim3 block, unsigned shared_bytes, void** args, char* error, std::size_t error_len) {
    const unsigned threads = block.x * block.y * block.z;
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    if (threads == 0 || threads > 1024) {
        std::snprintf(error, error_len, "block of %u threads (must be 1..1024)", threads);
        return 1;
    }
    if (blocks == 0) {
        std::snprintf(error, error_len, "empty grid");
        return 1;
    }
    std::lock_guard<std::mutex> guard(launch_mutex());
    Block state;
    state.shared.resize(shared_bytes + 16);
    state.warps.resize((threads + 31) / 32);
    for (std::size_t w = 0; w < state.warps.size(); ++w) {
        state.warps[w].size = std::min(32u, threads - (unsigned)w * 32u);
    }
    current_block = &state;
    std::barrier<> start(threads + 1);
    std::barrier<> end(threads + 1);

    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            threadIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            blockDim = block;
            gridDim = grid;
            lane_id = t % 32;
            warp_id = t / 32;
            for (unsigned long long b = 0; b < blocks; ++b) {
                start.arrive_and_wait();
                blockIdx = uint3{(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((unsigned long long)grid.x * grid.y))};
                kernel(args);
                current_block->barrier->arrive_and_drop();
                my_warp().barrier->arrive_and_drop();
                end.arrive_and_wait();
            }
        });
    }
    for (unsigned long long b = 0; b < blocks; ++b) {
        state.barrier = std::make_unique<std::barrier<>>(threads);
        for (auto& warp : state.warps) warp.barrier = std::make_unique<std::barrier<>>(warp.size);
        std::memset(state.shared.data(), 0xFF, state.shared.size());
        start.arrive_and_wait();
        end.arrive_and_wait();
    }
    for (auto& worker : workers) worker.join();
    current_block = nullptr;
    return 0;
}

}  // namespace emu
