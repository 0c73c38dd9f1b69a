// cuda_emulator.h: lets one .cu kernel file compile with g++ (C++20) and run on the host.
//
// Test-only (never built for users of the crate). The model:
//   - each CUDA thread of a block is a fiber (its own stack) on the launching OS thread,
//     resumed in an order shuffled anew at every pass over the block; a barrier switches to the next fiber (asif_emu_switch: a few
//     register moves, no system call), so a block of 256 threads costs no OS threads, no futex
//     and no kernel context switch. Under a sanitizer (-fsanitize=thread or address), with
//     ASIF_EMULATOR_THREADS defined, or off x86-64 Linux, each CUDA thread is an OS thread
//     instead, so ThreadSanitizer sees a missing __syncthreads() as a race. The
//     blocks of a launch run one after another in both, so `__shared__` variables can be plain
//     `static` ones;
//   - threadIdx/blockIdx/blockDim/gridDim are thread_local (with fibers, the scheduler sets
//     them before it resumes a fiber);
//   - __syncthreads() is a barrier over the block, warp operations (__shfl_*_sync,
//     __ballot_sync, __syncwarp) go through a per-warp exchange buffer and a per-warp barrier;
//   - a thread that returns early drops out of both barriers (arrive_and_drop), as on the GPU;
//     with fibers, a block whose threads all wait at barriers that the others never reach
//     fails the launch with a message (on the GPU it hangs or is undefined);
//   - atomics through std::atomic_ref; dynamic shared memory through ASIF_DYNAMIC_SHARED,
//     filled with 0xFF bytes (NaN as float) at each block so reads before writes show up;
//   - one launch at a time in the process (a mutex), so parallel tests are safe;
//   - tensor cores (kernels/mma.cuh, docs/tensor-cores.md): mma and ldmatrix are warp
//     collectives over the PTX fragment layouts, with operands rounded as the hardware reads
//     them; cp.async poisons its destination with NaN until the wait that completes its group;
//     misuse (a partial warp, a misaligned address) fails the launch with a message.
// What it cannot see: races between blocks, warp-synchronous code that relies on lockstep
// without __syncwarp, timing, and memory-model subtleties of the real GPU. Those need the GPU.
// With fibers each thread runs to its next barrier without interruption, in a shuffled order,
// so a race inside a block shows only where that order changes the result; the
// ThreadSanitizer build is what reports races.
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
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// Fibers need the stack switch below (x86-64 System V); anywhere else, and under a sanitizer,
// each CUDA thread is an OS thread.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__) || defined(ASIF_EMULATOR_THREADS) || \
    !defined(__x86_64__) || !defined(__linux__)
#define ASIF_EMULATOR_FIBERS 0
#else
#define ASIF_EMULATOR_FIBERS 1
#include <sys/mman.h>
#endif

#define ASIF_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
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

#if ASIF_EMULATOR_FIBERS
// A barrier among the fibers of one block: arriving fibers yield to the scheduler until the
// last expected one arrives (defined below the scheduler). The same interface as std::barrier.
struct FiberBarrier {
    explicit FiberBarrier(std::ptrdiff_t count) : expected(count) {}
    void arrive_and_wait();
    void arrive_and_drop();
    std::ptrdiff_t expected;
    std::ptrdiff_t arrived = 0;
    std::uint64_t phase = 0;
};
using Barrier = FiberBarrier;
#else
using Barrier = std::barrier<>;
#endif

struct Warp {
    std::unique_ptr<Barrier> barrier;
    unsigned size = 0;
    std::uint64_t exchange[32] = {};
    // Warp collectives of kernels/mma.cuh (mma, ldmatrix): each lane's operand registers or row
    // address, and whether the lane is taking part in the current collective.
    std::uint32_t fragment_a[32][4] = {};
    std::uint32_t fragment_b[32][2] = {};
    const void* row_address[32] = {};
    bool present[32] = {};
};

struct Block {
    std::unique_ptr<Barrier> barrier;
    std::vector<Warp> warps;
    std::vector<unsigned char> shared;
    // The first misuse a kernel made of an emulated instruction (a partial warp in an mma, a
    // misaligned cp.async...); the launch then fails with this message.
    std::mutex error_mutex;
    std::string error;
};

inline Block* current_block = nullptr;
inline thread_local unsigned lane_id = 0;
inline thread_local unsigned warp_id = 0;

inline void* dynamic_shared() {
    auto address = reinterpret_cast<std::uintptr_t>(current_block->shared.data());
    return reinterpret_cast<void*>((address + 15) & ~std::uintptr_t(15));
}

inline Warp& my_warp() { return current_block->warps[warp_id]; }

// Records a misuse of an emulated instruction; the launch returns it as its error.
inline void report(const char* message) {
    std::lock_guard<std::mutex> guard(current_block->error_mutex);
    if (current_block->error.empty()) current_block->error = message;
}

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
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline float __saturatef(float x) { return std::min(1.0f, std::max(0.0f, x)); }
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline int __float_as_int(float f) { int bits; std::memcpy(&bits, &f, 4); return bits; }
inline unsigned __float_as_uint(float f) { unsigned bits; std::memcpy(&bits, &f, 4); return bits; }
inline float __uint_as_float(unsigned bits) { float f; std::memcpy(&f, &bits, 4); return f; }
template <typename T>
T __ldg(const T* address) { return *address; }

// Tensor-core building blocks (kernels/mma.cuh calls these in place of its inline PTX; the model
// is described in docs/tensor-cores.md).
namespace emu {

inline float bits_to_float(std::uint32_t bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline std::uint32_t float_to_bits(float f) { std::uint32_t bits; std::memcpy(&bits, &f, 4); return bits; }

// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest with ties away from zero (adding half
// an ulp to the magnitude bits does exactly that), low 13 bits zero. NaN and infinity pass.
inline std::uint32_t tf32_round(float x) {
    const std::uint32_t bits = float_to_bits(x);
    if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
    return (bits + 0x1000u) & ~0x1fffu;
}

// cvt.rn.bf16.f32: round to nearest even; NaN stays a (quiet) NaN.
inline std::uint32_t bf16_round(float x) {
    const std::uint32_t bits = float_to_bits(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (bits >> 16) | 0x0040u;
    return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
}
// cvt.rn.bf16x2.f32 d, high, low: `low` in bits 0..15, `high` in bits 16..31.
inline std::uint32_t bf16x2_pack(float low, float high) { return bf16_round(low) | (bf16_round(high) << 16); }

// What the tensor core reads of an operand: a TF32 register's upper 19 bits (its low 13 bits are
// ignored), a bf16 half's 16 bits widened exactly.
inline double tf32_operand(std::uint32_t bits) { return bits_to_float(bits & ~0x1fffu); }
inline double bf16_operand(std::uint32_t bits, int half) { return bits_to_float(((bits >> (16 * half)) & 0xffffu) << 16); }

// Opens a warp collective: every lane publishes, then all wait. False (and an error for the
// launch) unless all 32 lanes of a full warp take part, as .sync.aligned requires.
inline bool collective_begin(Warp& warp, const char* what) {
    warp.present[lane_id] = true;
    warp.barrier->arrive_and_wait();
    bool full = warp.size == 32;
    for (unsigned lane = 0; lane < 32 && full; ++lane) full = warp.present[lane];
    if (!full) report(what);
    return full;
}
// Closes it: nobody overwrites the published values before every lane has read them.
inline void collective_end(Warp& warp) {
    warp.barrier->arrive_and_wait();
    warp.present[lane_id] = false;
}

// C/D fragment of both shapes (PTX ISA, "Matrix Fragments for mma.m16n8k8/m16n8k16"):
// c[i] is D[groupID + 8·(i ≥ 2)][2·threadID_in_group + (i & 1)].
// Each lane computes its own four outputs from the operands all lanes published: exact products
// of the rounded inputs summed in double, plus C, rounded once to fp32. The hardware's internal
// accumulation order and rounding are unspecified; integer-valued tiles make both exact.
template <typename ElementA, typename ElementB>
inline void mma_m16n8(float* d, const float* c, int depth, ElementA element_a, ElementB element_b) {
    const int group = (int)lane_id >> 2, thread_in_group = (int)lane_id & 3;
    float out[4];
    for (int i = 0; i < 4; ++i) {
        const int row = group + 8 * (i >> 1), col = 2 * thread_in_group + (i & 1);
        double sum = 0.0;
        for (int k = 0; k < depth; ++k) sum += element_a(row, k) * element_b(k, col);
        out[i] = (float)(sum + (double)c[i]);
    }
    for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32. Fragments (groupID g, threadID_in_group t):
// A a[i] = A[g + 8·(i & 1)][t + 4·(i ≥ 2)]; B b[i] = B[t + 4·i][g].
inline void mma_m16n8k8_tf32(float* d, const std::uint32_t* a, const std::uint32_t* b, const float* c) {
    Warp& warp = my_warp();
    for (int i = 0; i < 4; ++i) warp.fragment_a[lane_id][i] = a[i];
    for (int i = 0; i < 2; ++i) warp.fragment_b[lane_id][i] = b[i];
    if (collective_begin(warp, "mma.m16n8k8.tf32 needs all 32 lanes of a full warp")) {
        mma_m16n8(
            d, c, 8,
            [&](int row, int k) { return tf32_operand(warp.fragment_a[(row % 8) * 4 + k % 4][(row / 8) + 2 * (k / 4)]); },
            [&](int k, int col) { return tf32_operand(warp.fragment_b[col * 4 + k % 4][k / 4]); });
    }
    collective_end(warp);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32. Register i holds two bf16 (element 2i in
// the low half): A a[i] = A[g + 8·(i & 1)][2t + half + 8·(i ≥ 2)]; B b[i] = B[2t + half + 8·i][g].
inline void mma_m16n8k16_bf16(float* d, const std::uint32_t* a, const std::uint32_t* b, const float* c) {
    Warp& warp = my_warp();
    for (int i = 0; i < 4; ++i) warp.fragment_a[lane_id][i] = a[i];
    for (int i = 0; i < 2; ++i) warp.fragment_b[lane_id][i] = b[i];
    if (collective_begin(warp, "mma.m16n8k16.bf16 needs all 32 lanes of a full warp")) {
        mma_m16n8(
            d, c, 16,
            [&](int row, int k) {
                return bf16_operand(warp.fragment_a[(row % 8) * 4 + (k % 8) / 2][(row / 8) + 2 * (k / 8)], k % 2);
            },
            [&](int k, int col) { return bf16_operand(warp.fragment_b[col * 4 + (k % 8) / 2][k / 8], k % 2); });
    }
    collective_end(warp);
}

// ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16: lane 8·i + r gives the address of row r
// of 8×8 matrix i (16 bytes, 16-byte aligned). Lane L receives in r[i] two 16-bit elements of
// matrix i: (row L/4, columns 2·(L%4) and +1), or with .trans (rows 2·(L%4) and +1, column L/4);
// the first in the low half.
inline void ldmatrix(std::uint32_t* r, int count, bool transposed, const void* row) {
    Warp& warp = my_warp();
    warp.row_address[lane_id] = row;
    if ((int)lane_id < 8 * count && (reinterpret_cast<std::uintptr_t>(row) & 15u) != 0) {
        report("ldmatrix: a row address is not 16-byte aligned");
    }
    if (collective_begin(warp, "ldmatrix needs all 32 lanes of a full warp")) {
        const int lane = (int)lane_id;
        for (int i = 0; i < count; ++i) {
            auto element = [&](int matrix_row, int column) {
                std::uint16_t value;
                std::memcpy(&value, static_cast<const unsigned char*>(warp.row_address[8 * i + matrix_row]) + 2 * column, 2);
                return (std::uint32_t)value;
            };
            const std::uint32_t low = transposed ? element(2 * (lane % 4), lane / 4) : element(lane / 4, 2 * (lane % 4));
            const std::uint32_t high = transposed ? element(2 * (lane % 4) + 1, lane / 4) : element(lane / 4, 2 * (lane % 4) + 1);
            r[i] = low | (high << 16);
        }
    }
    collective_end(warp);
}

// cp.async.cg.shared.global (16 bytes) with commit and wait groups, per thread as in PTX. The
// source is read at issue; the destination holds NaN (0xFF bytes) from issue until the wait that
// completes the copy's group, so reading it too early fails the same way every run.
struct PendingCopy {
    void* destination;
    unsigned char bytes[16];
};
inline thread_local std::vector<PendingCopy> copies_uncommitted;
inline thread_local std::vector<std::vector<PendingCopy>> copies_committed;  // oldest group first

inline void cp_async_reset() {
    copies_uncommitted.clear();
    copies_committed.clear();
}
inline void cp_async_16(void* shared_destination, const void* global_source) {
    if (((reinterpret_cast<std::uintptr_t>(shared_destination) | reinterpret_cast<std::uintptr_t>(global_source)) & 15u) != 0) {
        report("cp.async: a 16-byte copy with an address that is not 16-byte aligned");
        return;
    }
    PendingCopy copy{shared_destination, {}};
    std::memcpy(copy.bytes, global_source, 16);
    std::memset(shared_destination, 0xFF, 16);
    copies_uncommitted.push_back(copy);
}
inline void cp_async_commit() {
    copies_committed.push_back(std::move(copies_uncommitted));
    copies_uncommitted.clear();
}
// cp.async.wait_group N: completes every committed group but the N most recent.
inline void cp_async_wait_group(int pending) {
    while ((int)copies_committed.size() > pending) {
        for (const PendingCopy& copy : copies_committed.front()) std::memcpy(copy.destination, copy.bytes, 16);
        copies_committed.erase(copies_committed.begin());
    }
}
// cp.async.wait_all = commit_group + wait_group 0.
inline void cp_async_wait_all() {
    cp_async_commit();
    cp_async_wait_group(0);
}

}  // namespace emu

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

#if ASIF_EMULATOR_FIBERS
// The fibers of one block and the scheduler that resumes them (one launch at a time, under
// launch_mutex, on the launching thread).
// Switches stacks (x86-64 System V): pushes the callee-saved registers and the SSE and x87
// control words on the current stack, stores the stack pointer in *from, loads `to` and pops
// the same from there. One copy per link (a COMDAT group), however many units include this.
extern "C" void asif_emu_switch(void** from, void* to);
asm(R"(
    .pushsection .text.asif_emu_switch,"axG",@progbits,asif_emu_switch,comdat
    .globl asif_emu_switch
    .hidden asif_emu_switch
    .type asif_emu_switch, @function
asif_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size asif_emu_switch, .-asif_emu_switch
    .popsection
)");

struct Fiber {
    void* stack_pointer = nullptr;  // where asif_emu_switch left it
    uint3 thread_index;
    unsigned lane = 0, warp = 0;
    std::vector<PendingCopy> uncommitted;                // this thread's cp.async state, swapped
    std::vector<std::vector<PendingCopy>> committed;     // into the thread_locals while it runs
    bool done = false;
};

struct Scheduler {
    void* main_stack_pointer = nullptr;
    Fiber* running = nullptr;
    std::uint64_t progress = 0;  // arrivals and exits: a pass without any is a deadlock
    Thunk kernel = nullptr;
    void** args = nullptr;
};
inline Scheduler* scheduler = nullptr;

// Fiber stacks, kept from launch to launch (launches are serialised): 512 KiB each, mapped
// lazily, with an inaccessible guard page below so an overflow faults instead of corrupting.
struct FiberStack {
    static constexpr std::size_t guard = 4096, size = 512 * 1024;
    unsigned char* base = nullptr;
    FiberStack() {
        void* mapping = mmap(nullptr, guard + size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mapping == MAP_FAILED) {
            std::fprintf(stderr, "cuda_emulator: cannot map a fiber stack\n");
            std::abort();
        }
        base = static_cast<unsigned char*>(mapping);
        mprotect(base, guard, PROT_NONE);
    }
    FiberStack(const FiberStack&) = delete;
    FiberStack& operator=(const FiberStack&) = delete;
    ~FiberStack() { munmap(base, guard + size); }
};
inline std::vector<std::unique_ptr<FiberStack>>& fiber_stacks() {
    static std::vector<std::unique_ptr<FiberStack>> stacks;
    return stacks;
}

inline void yield_to_scheduler() { asif_emu_switch(&scheduler->running->stack_pointer, scheduler->main_stack_pointer); }

inline void FiberBarrier::arrive_and_wait() {
    ++scheduler->progress;
    const std::uint64_t mine = phase;
    if (++arrived == expected) {
        arrived = 0;
        ++phase;
        return;
    }
    while (phase == mine) yield_to_scheduler();
}

inline void FiberBarrier::arrive_and_drop() {
    ++scheduler->progress;
    --expected;
    if (expected > 0 && arrived == expected) {
        arrived = 0;
        ++phase;
    }
}

// A fiber's body: the kernel for one thread of the current block, then out of both barriers,
// then back to the scheduler, which never resumes a finished fiber.
[[noreturn]] inline void fiber_main() {
    cp_async_reset();
    scheduler->kernel(scheduler->args);
    current_block->barrier->arrive_and_drop();
    my_warp().barrier->arrive_and_drop();
    scheduler->running->done = true;
    ++scheduler->progress;
    yield_to_scheduler();
    std::abort();
}

// Lays out a fresh frame at the top of `stack` for asif_emu_switch to pop: the control words
// as they are now, zeroed callee-saved registers, and fiber_main as the return address, placed
// so that fiber_main starts with the stack aligned as after a call.
inline void prepare_fiber(Fiber& fiber, FiberStack& stack) {
    auto* top = reinterpret_cast<std::uint64_t*>(stack.base + FiberStack::guard + FiberStack::size);
    std::uint64_t* frame = top - 9;  // control words, r15 r14 r13 r12 rbx rbp, return address, 0
    std::uint32_t mxcsr;
    std::uint16_t x87;
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(x87));
    frame[0] = (std::uint64_t)mxcsr | ((std::uint64_t)x87 << 32);
    for (int i = 1; i <= 6; ++i) frame[i] = 0;
    frame[7] = reinterpret_cast<std::uint64_t>(&fiber_main);
    frame[8] = 0;  // fiber_main's own return address slot: it never returns
    fiber.stack_pointer = frame;
}

// A different seed for every fibered launch of the process (splitmix64 of a counter).
inline std::uint64_t next_launch_seed() {
    static std::atomic<std::uint64_t> launches{0};
    std::uint64_t z = (launches.fetch_add(1) + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (z ^ (z >> 31)) | 1;
}

// Fisher-Yates over `order` with xorshift64 on `state`.
inline void shuffle(std::vector<unsigned>& order, std::uint64_t& state) {
    for (std::size_t i = order.size(); i > 1; --i) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::swap(order[i - 1], order[state % i]);
    }
}

// Resumes `fiber` until it yields or ends, with its thread's identity and cp.async state.
inline void resume(Fiber& fiber) {
    threadIdx = fiber.thread_index;
    lane_id = fiber.lane;
    warp_id = fiber.warp;
    copies_uncommitted.swap(fiber.uncommitted);
    copies_committed.swap(fiber.committed);
    scheduler->running = &fiber;
    asif_emu_switch(&scheduler->main_stack_pointer, fiber.stack_pointer);
    copies_uncommitted.swap(fiber.uncommitted);
    copies_committed.swap(fiber.committed);
}
#endif

// Runs grid × block threads, the blocks in order: with fibers, each block's threads are
// started afresh on the kept stacks; with OS threads, blockDim threads live for the whole
// launch. Returns 0, or writes a reason into `error` and returns 1.
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
    auto block_index = [&](unsigned long long b) {
        return uint3{(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((unsigned long long)grid.x * grid.y))};
    };
    auto thread_index = [&](unsigned t) { return uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)}; };
    auto new_block = [&] {
        state.barrier = std::make_unique<Barrier>(threads);
        for (auto& warp : state.warps) warp.barrier = std::make_unique<Barrier>(warp.size);
        std::memset(state.shared.data(), 0xFF, state.shared.size());
    };

#if ASIF_EMULATOR_FIBERS
    Scheduler schedule;
    schedule.kernel = kernel;
    schedule.args = args;
    scheduler = &schedule;
    auto& stacks = fiber_stacks();
    while (stacks.size() < threads) stacks.push_back(std::make_unique<FiberStack>());
    std::vector<Fiber> fibers(threads);
    std::vector<unsigned> order(threads);
    for (unsigned t = 0; t < threads; ++t) order[t] = t;
    // Each pass resumes the fibers in a fresh order, drawn from a stream that differs from
    // launch to launch: as on the GPU, nothing fixes which thread of a block runs first, so
    // code whose result depends on it (atomics summed in thread order, a race) does not give
    // one answer by luck of a fixed order.
    std::uint64_t random = next_launch_seed();
    blockDim = block;
    gridDim = grid;
    bool deadlocked = false;
    for (unsigned long long b = 0; b < blocks && !deadlocked; ++b) {
        new_block();
        blockIdx = block_index(b);
        for (unsigned t = 0; t < threads; ++t) {
            Fiber& fiber = fibers[t];
            fiber.thread_index = thread_index(t);
            fiber.lane = t % 32;
            fiber.warp = t / 32;
            fiber.uncommitted.clear();
            fiber.committed.clear();
            fiber.done = false;
            prepare_fiber(fiber, *stacks[t]);
        }
        unsigned running = threads;
        while (running > 0) {
            const std::uint64_t before = schedule.progress;
            shuffle(order, random);
            for (unsigned t : order) {
                Fiber& fiber = fibers[t];
                if (fiber.done) continue;
                resume(fiber);
                if (fiber.done) --running;
            }
            if (running > 0 && schedule.progress == before) {
                // Every thread left waits at a barrier that no other thread will reach. The
                // fibers are abandoned where they wait (their stacks are reused next block).
                const uint3 at = block_index(b);
                char message[160];
                std::snprintf(message, sizeof message,
                              "deadlock in block (%u, %u, %u): %u threads wait at a barrier that the others never reach",
                              at.x, at.y, at.z, running);
                if (state.error.empty()) state.error = message;
                deadlocked = true;
                break;
            }
        }
    }
    scheduler = nullptr;
    cp_async_reset();
#else
    std::barrier<> start(threads + 1);
    std::barrier<> end(threads + 1);

    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            threadIdx = thread_index(t);
            blockDim = block;
            gridDim = grid;
            lane_id = t % 32;
            warp_id = t / 32;
            for (unsigned long long b = 0; b < blocks; ++b) {
                start.arrive_and_wait();
                blockIdx = block_index(b);
                cp_async_reset();
                kernel(args);
                current_block->barrier->arrive_and_drop();
                my_warp().barrier->arrive_and_drop();
                end.arrive_and_wait();
            }
        });
    }
    for (unsigned long long b = 0; b < blocks; ++b) {
        new_block();
        start.arrive_and_wait();
        end.arrive_and_wait();
    }
    for (auto& worker : workers) worker.join();
#endif
    current_block = nullptr;
    if (!state.error.empty()) {
        std::snprintf(error, error_len, "%s", state.error.c_str());
        return 1;
    }
    return 0;
}

}  // namespace emu

// ---- Kernel families of other crates (docs/interop.md, "Adding your own kernel") ------------
// A crate that registers its own .cu at run time (asif_kernels::kernels::register) builds its
// emulated half with this header, like emulator/build.rs builds the crate's kernels, and exports
// one entry point of the emulator's launch ABI (asif_emu_launch's shape) with
//   ASIF_EMU_EXPORT_FAMILY(my_family_emulated, ASIF_EMU_ENTRY(kernel_a), ASIF_EMU_ENTRY(kernel_b))
// after including its .cu. The Rust side passes that symbol as CustomFamily::emulated.
namespace emu {

// Runs the kernel `name` of `table` (ended by a null entry); 0, or a reason in `error` and 1.
inline int launch_from_table(const KernelEntry* table, const char* name, const unsigned* grid, const unsigned* block,
                             unsigned shared_bytes, void** args, char* error, std::size_t error_len) {
    for (const KernelEntry* entry = table; entry->name; ++entry) {
        if (std::strcmp(entry->name, name) == 0) {
            return launch(entry->thunk, dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]),
                          shared_bytes, args, error, error_len);
        }
    }
    std::snprintf(error, error_len, "no emulated kernel named '%s' in this family", name);
    return 1;
}

}  // namespace emu

#define ASIF_EMU_ENTRY(kernel) ::emu::KernelEntry{#kernel, &::emu::thunk<&kernel>}
#define ASIF_EMU_EXPORT_FAMILY(symbol, ...)                                                               \
    extern "C" int symbol(const char* name, const unsigned* grid, const unsigned* block,                  \
                          unsigned shared_bytes, void** args, char* error, std::size_t error_len) {      \
        static const ::emu::KernelEntry entries[] = {__VA_ARGS__, ::emu::KernelEntry{nullptr, nullptr}}; \
        return ::emu::launch_from_table(entries, name, grid, block, shared_bytes, args, error, error_len); \
    }
