/// The C++ text compiled before every kernel family in the emulator (`-DHASTE_EMULATOR`): CUDA's built-ins for the
/// subset documented in Sources/HasteCUDA/Kernels/Prelude.swift, the block scheduler (cooperative fibers), the
/// launch entry point `haste_emu_run` and the reference GEMM `haste_emu_gemm`.
enum EmulatorRuntime {
    static let header = #"""
// haste CUDA emulator runtime: the CUDA subset of Sources/HasteCUDA/Kernels/Prelude.swift on the host.
// Blocks run one after another on the calling OS thread; the threads of a block run as cooperative fibers that
// switch only at __syncthreads() and warp shuffles (a thread that never waits runs to completion on the current
// fiber, so barrier-free kernels cost a plain call per thread).
#if defined(__APPLE__) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700                      // ucontext on macOS (the portable fiber switch, signal contexts)
#define _DARWIN_C_SOURCE 1
#endif
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <signal.h>
#include <ucontext.h>
#include <setjmp.h>
#include <pthread.h>
#include <dlfcn.h>
#include <type_traits>
#include <utility>
#if !(defined(__x86_64__) || defined(__aarch64__))
#define HASTE_EMU_UCONTEXT 1
#endif

#define HASTE_EMU_API extern "C" __attribute__((visibility("default")))

struct uint3 { unsigned x, y, z; };
typedef uint3 dim3;

namespace haste_emu {

// ---- state of the launch in progress (one launch at a time per process: the Swift driver holds a lock) ----
static uint3 g_threadIdx, g_blockIdx, g_blockDim, g_gridDim;
static void (*g_tramp)(void**);
static void** g_args;
static const char* g_kernel = "";
static char* g_dynamic_shared;
static char g_error[2048];
static bool g_failed;

static int g_current_thread = -1;           // linear index of the running thread; -1 in the scheduler

static void vfail(const char* fmt, va_list ap) {
    if (g_failed) return;
    g_failed = true;
    int n = g_current_thread >= 0
        ? snprintf(g_error, sizeof g_error, "kernel %s, block (%u, %u, %u), thread (%u, %u, %u): ", g_kernel,
                   g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, g_threadIdx.x, g_threadIdx.y, g_threadIdx.z)
        : snprintf(g_error, sizeof g_error, "kernel %s, block (%u, %u, %u): ", g_kernel,
                   g_blockIdx.x, g_blockIdx.y, g_blockIdx.z);
    if (n > 0 && n < (int)sizeof g_error) vsnprintf(g_error + n, sizeof g_error - n, fmt, ap);
}
static void fail(const char* fmt, ...) { va_list ap; va_start(ap, fmt); vfail(fmt, ap); va_end(ap); }

// ---- fibers ----
// A fiber runs threads of the current block one after another until one of them waits (at __syncthreads() or a
// warp shuffle); that thread keeps the fiber, and the next runnable thread continues on its own fiber (a fresh
// one for threads not started yet). A block of threads that never wait therefore runs on one fiber as a loop.
enum { kStackBytes = 64 * 1024 };
struct Fiber {
#ifdef HASTE_EMU_UCONTEXT
    ucontext_t context;
#else
    void* sp;
#endif
    char* stack;       // kStackBytes usable, a guard page below
    bool fresh;        // its stack must be (re)initialised before the next switch to it
};
static Fiber g_scheduler;                      // the launching OS thread's own stack
static Fiber** g_all_fibers;
static Fiber** g_idle;
static int g_fiber_count, g_idle_count, g_fiber_capacity;
static Fiber* g_current;

#if !defined(HASTE_EMU_UCONTEXT) && defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores its pointer in *save, continues on `to`
// (the x87 and SSE control words are never changed by kernels and are not switched).
__attribute__((naked, noinline)) static void switch_stack(void** save, void* to) {
    __asm__ volatile(
        "pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
        "movq %rsp, (%rdi)\n movq %rsi, %rsp\n"
        "popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n ret\n");
}
#elif !defined(HASTE_EMU_UCONTEXT) && defined(__aarch64__)
__attribute__((naked, noinline)) static void switch_stack(void** save, void* to) {
    __asm__ volatile(
        "sub sp, sp, #160\n"
        "stp x19, x20, [sp, #0]\n stp x21, x22, [sp, #16]\n stp x23, x24, [sp, #32]\n stp x25, x26, [sp, #48]\n"
        "stp x27, x28, [sp, #64]\n stp x29, x30, [sp, #80]\n stp d8, d9, [sp, #96]\n stp d10, d11, [sp, #112]\n"
        "stp d12, d13, [sp, #128]\n stp d14, d15, [sp, #144]\n"
        "mov x2, sp\n str x2, [x0]\n mov sp, x1\n"
        "ldp x19, x20, [sp, #0]\n ldp x21, x22, [sp, #16]\n ldp x23, x24, [sp, #32]\n ldp x25, x26, [sp, #48]\n"
        "ldp x27, x28, [sp, #64]\n ldp x29, x30, [sp, #80]\n ldp d8, d9, [sp, #96]\n ldp d10, d11, [sp, #112]\n"
        "ldp d12, d13, [sp, #128]\n ldp d14, d15, [sp, #144]\n"
        "add sp, sp, #160\n ret\n");
}
#endif

static void fiber_main();

// Continues on `to`; returns when something switches back to the current fiber.
static void switch_to(Fiber* to) {
    Fiber* from = g_current;
    g_current = to;
#ifdef HASTE_EMU_UCONTEXT
    if (to->fresh) {
        getcontext(&to->context);
        to->context.uc_stack.ss_sp = to->stack;
        to->context.uc_stack.ss_size = kStackBytes;
        to->context.uc_link = nullptr;
        makecontext(&to->context, (void (*)())fiber_main, 0);
        to->fresh = false;
    }
    swapcontext(&from->context, &to->context);
#else
    if (to->fresh) {
        uintptr_t top = ((uintptr_t)(to->stack + kStackBytes)) & ~(uintptr_t)15;
        void** sp = (void**)top;
#if defined(__x86_64__)
        *--sp = nullptr;                       // fake return address of fiber_main (it never returns)
        *--sp = (void*)fiber_main;             // `ret` lands here with rsp ≡ 8 (mod 16), as after a call
        for (int i = 0; i < 6; i++) *--sp = nullptr;
#else
        sp -= 20;
        memset(sp, 0, 160);
        sp[11] = (void*)fiber_main;            // x30
#endif
        to->sp = sp;
        to->fresh = false;
    }
    switch_stack(&from->sp, to->sp);
#endif
}

static void grow_fibers() {
    int cap = g_fiber_capacity ? g_fiber_capacity * 2 : 64;
    Fiber** all = (Fiber**)realloc(g_all_fibers, sizeof(Fiber*) * cap);
    Fiber** idle = all ? (Fiber**)realloc(g_idle, sizeof(Fiber*) * cap) : nullptr;
    if (!all || !idle) { fprintf(stderr, "haste emulator: out of memory\n"); abort(); }
    g_all_fibers = all; g_idle = idle; g_fiber_capacity = cap;
}

static Fiber* take_idle_fiber() {
    if (g_idle_count > 0) return g_idle[--g_idle_count];
    if (g_fiber_count == g_fiber_capacity) grow_fibers();
    long page = sysconf(_SC_PAGESIZE);
    char* m = (char*)mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    Fiber* f = (Fiber*)calloc(1, sizeof(Fiber));
    if (m == MAP_FAILED || !f) { fprintf(stderr, "haste emulator: cannot map a fiber stack\n"); abort(); }
    mprotect(m, page, PROT_NONE);              // a stack overflow faults instead of corrupting the neighbour
    f->stack = m + page;
    f->fresh = true;
    g_all_fibers[g_fiber_count++] = f;
    return f;
}

// ---- block scheduling ----
enum ThreadState { kUnstarted, kRunning, kWaitWarp, kWaitBlock, kDone };
struct ThreadSlot { int state; unsigned wait_gen; Fiber* fiber; };
struct Warp {
    unsigned gen, arrived, size;
    uint64_t slots[2][32];
};
// Why control came back to the scheduler.
enum Outcome { kBlockDone, kDeadlock, kAborted };
static Outcome g_outcome;
static ThreadSlot g_threads[1024];
static Warp g_warps[32];
static int g_block_threads, g_next_thread, g_waiting;
// Threads start in index order, or in reverse order (every other block when the launch alternates): a kernel that
// is right only in one order (a shared value read without the barrier after the thread that writes it) fails.
static bool g_alternate_order, g_reversed;
static inline int sequence(int t) { return g_reversed ? g_block_threads - 1 - t : t; }  // its own inverse
static unsigned g_block_gen, g_block_arrived;

static inline void set_thread_index(int t) {
    g_current_thread = t;
    if (g_blockDim.y == 1 && g_blockDim.z == 1) { g_threadIdx.x = (unsigned)t; return; }
    g_threadIdx.x = (unsigned)t % g_blockDim.x;
    g_threadIdx.y = ((unsigned)t / g_blockDim.x) % g_blockDim.y;
    g_threadIdx.z = (unsigned)t / (g_blockDim.x * g_blockDim.y);
}

static inline Warp& warp_of(int t) { return g_warps[t >> 5]; }

static inline bool runnable(int t) {
    const ThreadSlot& s = g_threads[t];
    if (s.state == kWaitBlock) return g_block_gen != s.wait_gen;
    if (s.state == kWaitWarp) return warp_of(t).gen != s.wait_gen;
    return false;
}

static void to_scheduler(Outcome why) {
    g_outcome = why;
    g_current_thread = -1;
    switch_to(&g_scheduler);
}

// Hands the OS thread to the next thread after `t` (cyclically) that can run: a waiting thread whose barrier
// opened, or a thread not started yet (on an idle fiber). Back to the scheduler when the block is done or stuck.
static void run_next(int t) {
    int n = g_block_threads, position = sequence(t);
    for (int k = 1; k <= n; k++) {
        int q = position + k;
        if (q >= n) q -= n;
        if (q >= g_next_thread) { switch_to(take_idle_fiber()); return; }
        int u = sequence(q);
        if (runnable(u)) { switch_to(g_threads[u].fiber); return; }
    }
    to_scheduler(g_waiting > 0 ? kDeadlock : kBlockDone);
}

static void fiber_main() {
    for (;;) {
        int last = -1;
        while (g_next_thread < g_block_threads) {
            int t = sequence(g_next_thread++);
            g_threads[t].fiber = g_current;
            g_threads[t].state = kRunning;
            set_thread_index(t);
            g_tramp(g_args);
            g_threads[t].state = kDone;
            last = t;
        }
        // Nothing left to start: this fiber is idle until a later block (or launch) needs it.
        g_idle[g_idle_count++] = g_current;
        if (g_waiting == 0) to_scheduler(kBlockDone);
        else run_next(last < 0 ? g_current_thread : last);
    }
}

// The current thread waits until the generation counter it read as `my_gen` moves on.
static inline void wait_for(int state, unsigned my_gen) {
    int t = g_current_thread;
    g_threads[t].state = state;
    g_threads[t].wait_gen = my_gen;
    g_waiting++;
    run_next(t);
    g_waiting--;
    g_threads[t].state = kRunning;
    set_thread_index(t);
}

static void abort_thread(const char* fmt, ...);
static const char* g_barrier_file;
static int g_barrier_line;

// Every thread of the block must wait at the same __syncthreads() (the first arrival names it).
static inline void block_barrier(const char* file, int line) {
    if (g_block_arrived == 0) { g_barrier_file = file; g_barrier_line = line; }
    else if (line != g_barrier_line || (file != g_barrier_file && strcmp(file, g_barrier_file) != 0))
        abort_thread("reached __syncthreads() at %s:%d while %u threads of the block wait at the one at %s:%d "
                     "(undefined behaviour in CUDA: a barrier in divergent code)", file, line, g_block_arrived,
                     g_barrier_file, g_barrier_line);
    if (++g_block_arrived == (unsigned)g_block_threads) {
        g_block_arrived = 0;
        g_block_gen++;
        return;
    }
    wait_for(kWaitBlock, g_block_gen);
}

static inline void warp_barrier() {
    Warp& w = warp_of(g_current_thread);
    if (++w.arrived == w.size) {
        w.arrived = 0;
        w.gen++;
        return;
    }
    wait_for(kWaitWarp, w.gen);
}

// Fails the launch from inside a thread: its fiber goes back to the scheduler for good.
static void abort_thread(const char* fmt, ...) {
    va_list ap; va_start(ap, fmt); vfail(fmt, ap); va_end(ap);
    to_scheduler(kAborted);
}

// After a failed block: every fiber is idle again, with a fresh stack where a thread was abandoned.
static void abandon_fibers() {
    g_idle_count = 0;
    for (int i = 0; i < g_fiber_count; i++) {
        g_all_fibers[i]->fresh = true;
        g_idle[g_idle_count++] = g_all_fibers[i];
    }
}

static void describe_deadlock() {
    int done = 0, at_block = 0, at_warp = 0, warp = -1;
    for (int t = 0; t < g_block_threads; t++) {
        if (g_threads[t].state == kDone) done++;
        else if (g_threads[t].state == kWaitBlock) at_block++;
        else if (g_threads[t].state == kWaitWarp) { at_warp++; if (warp < 0) warp = t >> 5; }
    }
    if (at_warp > 0) {
        Warp& w = g_warps[warp];
        fail("deadlock: a warp shuffle (all %u lanes of warp %d must take part) was reached by %u lanes; %d threads of "
             "the block returned, %d wait at __syncthreads() (undefined behaviour in CUDA: every lane of the warp must "
             "execute the same shuffle)", w.size, warp, w.arrived, done, at_block);
    } else {
        fail("deadlock: __syncthreads() was reached by %d of the block's %d threads; the other %d returned without "
             "reaching it (undefined behaviour in CUDA: every thread of the block must reach every barrier)",
             at_block, g_block_threads, done);
    }
}

#if defined(__linux__)
extern "C" char __start_haste_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_haste_shared[] __attribute__((weak, visibility("hidden")));
#endif
static void poison_shared() {
#if defined(__linux__)
    char *start = __start_haste_shared, *stop = __stop_haste_shared;
    if (start && stop > start) memset(start, 0xFF, (size_t)(stop - start));
#endif
}

// Runs one block; false when the launch failed.
static bool run_block() {
    poison_shared();
    g_next_thread = 0; g_waiting = 0;
    g_reversed = g_alternate_order && ((g_blockIdx.x + g_blockIdx.y + g_blockIdx.z) & 1) == 0;
    g_block_gen = 0; g_block_arrived = 0;
    for (int w = 0; w * 32 < g_block_threads; w++) {
        g_warps[w].gen = 0; g_warps[w].arrived = 0;
        int left = g_block_threads - w * 32;
        g_warps[w].size = left < 32 ? left : 32;
    }
    for (int t = 0; t < g_block_threads; t++) g_threads[t].state = kUnstarted;
    g_current = &g_scheduler;
    switch_to(take_idle_fiber());
    g_current = &g_scheduler;
    g_current_thread = -1;
    if (g_outcome == kBlockDone && !g_failed) return true;
    if (g_outcome == kDeadlock) describe_deadlock();
    abandon_fibers();
    return false;
}

} // namespace haste_emu

// ---- the CUDA subset ----
#define threadIdx haste_emu::g_threadIdx
#define blockIdx haste_emu::g_blockIdx
#define blockDim haste_emu::g_blockDim
#define gridDim haste_emu::g_gridDim
#define warpSize 32
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#if defined(__linux__)
// Static shared arrays live in one section, poisoned (0xFF) at the start of every block like dynamic shared memory.
#define __shared__ static __attribute__((section("haste_shared")))
#else
#define __shared__ static
#endif
#define __constant__ static
#define HASTE_DYNAMIC_SHARED(T, name) T* name = (T*)haste_emu::g_dynamic_shared

static inline void __trap() { haste_emu::abort_thread("__trap() called"); }
#define __syncthreads() haste_emu::block_barrier(__FILE__, __LINE__)
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (mask != 0xffffffffu) haste_emu::abort_thread("__syncwarp with mask %#x: the emulator supports only HASTE_FULL_MASK", mask);
    haste_emu::warp_barrier();
}

namespace haste_emu {
template <class T> static inline T shuffle(unsigned mask, T v, int mode, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    if (mask != 0xffffffffu) abort_thread("warp shuffle with mask %#x: the emulator supports only HASTE_FULL_MASK", mask);
    if (width != 32) abort_thread("warp shuffle with width %d: the emulator supports only 32", width);
    int t = g_current_thread, lane = t & 31;
    Warp& w = warp_of(t);
    unsigned buffer = w.gen & 1;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    w.slots[buffer][lane] = bits;
    warp_barrier();
    int src = lane;
    switch (mode) {
    case 0: src = lane ^ arg; break;                               // xor
    case 1: src = lane + arg; if (src >= 32) src = lane; break;    // down
    case 2: src = lane - arg; if (src < 0) src = lane; break;      // up
    default: src = arg & 31; break;                                // indexed
    }
    if (src >= (int)w.size) src = lane;                            // a partial warp: no such lane
    T out;
    memcpy(&out, &w.slots[buffer][src], sizeof(T));
    return out;
}
} // namespace haste_emu

namespace haste_emu {
// Warp votes: every lane of the warp deposits its predicate, then all read the warp's ballot.
static inline unsigned ballot(unsigned mask, int predicate) {
    if (mask != 0xffffffffu) abort_thread("warp vote with mask %#x: the emulator supports only HASTE_FULL_MASK", mask);
    int t = g_current_thread, lane = t & 31;
    Warp& w = warp_of(t);
    unsigned buffer = w.gen & 1;
    w.slots[buffer][lane] = predicate != 0;
    warp_barrier();
    unsigned bits = 0;
    for (unsigned l = 0; l < w.size; l++) bits |= (unsigned)w.slots[buffer][l] << l;
    return bits;
}
} // namespace haste_emu
static inline unsigned __ballot_sync(unsigned mask, int predicate) { return haste_emu::ballot(mask, predicate); }
static inline int __any_sync(unsigned mask, int predicate) { return haste_emu::ballot(mask, predicate) != 0; }
static inline int __all_sync(unsigned mask, int predicate) {
    unsigned size = haste_emu::warp_of(haste_emu::g_current_thread).size;
    return haste_emu::ballot(mask, predicate) == (size == 32 ? 0xffffffffu : (1u << size) - 1u);
}
static inline unsigned __activemask() {
    unsigned size = haste_emu::warp_of(haste_emu::g_current_thread).size;
    return size == 32 ? 0xffffffffu : (1u << size) - 1u;
}

template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
    return haste_emu::shuffle(mask, v, 0, laneMask, width);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return haste_emu::shuffle(mask, v, 1, (int)delta, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return haste_emu::shuffle(mask, v, 2, (int)delta, width);
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int srcLane, int width = 32) {
    return haste_emu::shuffle(mask, v, 3, srcLane, width);
}

// Atomics: blocks and threads never run at the same time, so plain read-modify-write is atomic here.
static inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
static inline double atomicAdd(double* p, double v) { double o = *p; *p = o + v; return o; }
static inline int atomicAdd(int* p, int v) { int o = *p; *p = (int)((unsigned)o + (unsigned)v); return o; }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    unsigned long long o = *p; *p = o + v; return o;
}
static inline int atomicCAS(int* p, int compare, int v) { int o = *p; if (o == compare) *p = v; return o; }
static inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned v) {
    unsigned o = *p; if (o == compare) *p = v; return o;
}
static inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare, unsigned long long v) {
    unsigned long long o = *p; if (o == compare) *p = v; return o;
}
static inline int atomicMax(int* p, int v) { int o = *p; if (v > o) *p = v; return o; }
static inline int atomicMin(int* p, int v) { int o = *p; if (v < o) *p = v; return o; }
static inline unsigned atomicMax(unsigned* p, unsigned v) { unsigned o = *p; if (v > o) *p = v; return o; }
static inline unsigned atomicMin(unsigned* p, unsigned v) { unsigned o = *p; if (v < o) *p = v; return o; }
static inline int atomicExch(int* p, int v) { int o = *p; *p = v; return o; }
static inline unsigned atomicExch(unsigned* p, unsigned v) { unsigned o = *p; *p = v; return o; }
static inline float atomicExch(float* p, float v) { float o = *p; *p = v; return o; }

// Math and bit casts beyond <math.h>.
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
#define __expf expf
#define __logf logf
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline long long __double_as_longlong(double d) { long long u; memcpy(&u, &d, 8); return u; }
static inline double __longlong_as_double(long long u) { double d; memcpy(&d, &u, 8); return d; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

namespace haste_emu {
// The parameter list of a kernel, one code per parameter: "p<alignment>" pointer, i int32, j uint32, l int64,
// u uint64, f float, d double, ? anything else (the Swift side rejects it).
template <class T> static void describe(char*& s) {
    if constexpr (std::is_pointer<T>::value) {
        typedef typename std::remove_cv<typename std::remove_pointer<T>::type>::type P;
        size_t a;
        if constexpr (std::is_void<P>::value) a = 1; else a = alignof(P);
        s += sprintf(s, "p%zu,", a);
    } else if constexpr (std::is_same<T, float>::value) { s += sprintf(s, "f,"); }
    else if constexpr (std::is_same<T, double>::value) { s += sprintf(s, "d,"); }
    else if constexpr (std::is_integral<T>::value && sizeof(T) == 4) { s += sprintf(s, std::is_signed<T>::value ? "i," : "j,"); }
    else if constexpr (std::is_integral<T>::value && sizeof(T) == 8) { s += sprintf(s, std::is_signed<T>::value ? "l," : "u,"); }
    else { s += sprintf(s, "?,"); }
}
template <class... A> static const char* signature(void (*)(A...)) {
    static char text[16 * (sizeof...(A) + 1)];
    char* s = text;
    (describe<A>(s), ...);
    if (s > text) s[-1] = 0; else *s = 0;
    return text;
}
template <class... A, size_t... I> static inline void call(void (*f)(A...), void** a, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_cv<A>::type*>(a[I])...);
}
template <class... A> static inline void call(void (*f)(A...), void** a) { call(f, a, std::index_sequence_for<A...>()); }
} // namespace haste_emu

namespace haste_emu {
// A fault inside a kernel (an access outside device memory, a fiber's stack overflow, an integer division by
// zero, a trap of the undefined-behaviour checks the kernels are compiled with) ends the launch with a message
// instead of the test process: the handlers are installed for the launch only, on the launching thread's
// alternate stack; a fault on any other thread goes to the previous handler.
static sigjmp_buf g_fault_jump;
static volatile sig_atomic_t g_fault_armed;
static pthread_t g_launch_thread;
static struct sigaction g_old_segv, g_old_bus, g_old_fpe, g_old_ill;
static volatile uintptr_t g_fault_address, g_fault_pc;
static volatile int g_fault_signal;
enum { kAltStackBytes = 64 * 1024 };
static char* g_alt_stack;

static void restore_handlers() {
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    sigaction(SIGFPE, &g_old_fpe, nullptr);
    sigaction(SIGILL, &g_old_ill, nullptr);
}

static uintptr_t faulting_pc(void* context) {
    ucontext_t* uc = (ucontext_t*)context;
#if defined(__linux__) && defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__linux__) && defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#elif defined(__APPLE__) && defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext->__ss.__rip;
#elif defined(__APPLE__) && defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext->__ss.__pc;
#else
    (void)uc; return 0;
#endif
}

// The check behind a trap of -fsanitize-trap on x86-64 (`ud1l kind(%eax), %eax`; clang's SanitizerHandler order).
static const char* trap_kind(uintptr_t pc) {
    static const char* const names[] = {
        "signed integer overflow in an addition", "__builtin_unreachable reached", "CFI check", "integer division by zero (or INT_MIN / -1; a GPU returns an unspecified value)",
        "dynamic type", "float to integer conversion out of range (a GPU saturates, the host does not)",
        "function type mismatch", "implicit conversion", "invalid builtin argument", "invalid cast",
        "load of an invalid bool or enum value", "missing return", "signed integer overflow in a multiplication",
        "signed integer overflow in a negation", "nullability", "nullability", "nonnull", "nonnull",
        "index out of bounds of a fixed-size array", "pointer overflow", "shift out of range",
        "signed integer overflow in a subtraction", "misaligned or null pointer access", "alignment assumption",
        "variable-length array bound", "bounds"};
#if defined(__x86_64__)
    const unsigned char* p = (const unsigned char*)pc;
    if (p && p[0] == 0x67 && p[1] == 0x0f && p[2] == 0xb9) {
        unsigned kind = p[3] == 0x40 ? p[4] : (p[3] == 0x00 ? 0 : 255);
        if (kind < sizeof names / sizeof names[0]) return names[kind];
    }
#else
    (void)pc; (void)names;
#endif
    return "a trap";
}

static void on_fault(int sig, siginfo_t* info, void* context) {
    if (!g_fault_armed || !pthread_equal(pthread_self(), g_launch_thread)) {
        restore_handlers();                    // not a kernel's: the instruction faults again, the old handler runs
        return;
    }
    g_fault_armed = 0;
    g_fault_signal = sig;
    g_fault_address = (uintptr_t)info->si_addr;
    g_fault_pc = faulting_pc(context);
    siglongjmp(g_fault_jump, 1);
}

static bool in_fiber_guard(uintptr_t a) {
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < g_fiber_count; i++) {
        uintptr_t stack = (uintptr_t)g_all_fibers[i]->stack;
        if (a + page >= stack && a < stack) return true;
    }
    return false;
}

static bool run_blocks(const unsigned* grid) {
    for (unsigned z = 0; z < grid[2]; z++)
        for (unsigned y = 0; y < grid[1]; y++)
            for (unsigned x = 0; x < grid[0]; x++) {
                g_blockIdx = {x, y, z};
                if (!run_block()) return false;
            }
    return !g_failed;
}
} // namespace haste_emu

// Runs a launch: every block in order. Returns 0, or 1 with a message in `error`. After a fault, fault[0] is
// 1 for an invalid memory access (fault[1] its address), 2 for any other fault; fault[2] the faulting instruction's
// offset in the shared object whose path fault[3] points to (0 when unknown).
HASTE_EMU_API int haste_emu_run(void (*tramp)(void**), void** args, const char* kernel, const unsigned* grid,
                                const unsigned* block, char* dynamic_shared, int alternate_order, char* error,
                                size_t error_capacity, uint64_t* fault) {
    using namespace haste_emu;
    g_alternate_order = alternate_order != 0;
    g_tramp = tramp; g_args = args; g_kernel = kernel; g_dynamic_shared = dynamic_shared;
    g_failed = false; g_error[0] = 0;
    fault[0] = fault[1] = fault[2] = fault[3] = 0;
    g_gridDim = {grid[0], grid[1], grid[2]};
    g_blockDim = {block[0], block[1], block[2]};
    g_threadIdx = {0, 0, 0};                   // one-dimensional blocks only ever set .x
    g_block_threads = (int)(block[0] * block[1] * block[2]);

    if (!g_alt_stack) g_alt_stack = (char*)malloc(kAltStackBytes);
    stack_t alt, old_alt;
    alt.ss_sp = g_alt_stack; alt.ss_size = kAltStackBytes; alt.ss_flags = 0;
    sigaltstack(&alt, &old_alt);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &g_old_segv);
    sigaction(SIGBUS, &action, &g_old_bus);
    sigaction(SIGFPE, &action, &g_old_fpe);
    sigaction(SIGILL, &action, &g_old_ill);
    g_launch_thread = pthread_self();

    bool ok;
    if (sigsetjmp(g_fault_jump, 1) == 0) {
        g_fault_armed = 1;
        ok = run_blocks(grid);
        g_fault_armed = 0;
    } else {
        ok = false;
        uintptr_t a = g_fault_address;
        fault[0] = 2;
        Dl_info info;
        if (g_fault_pc && dladdr((void*)g_fault_pc, &info) && info.dli_fname && info.dli_fbase) {
            fault[2] = (uint64_t)(g_fault_pc - (uintptr_t)info.dli_fbase);
            fault[3] = (uint64_t)(uintptr_t)info.dli_fname;
        }
        if (g_fault_signal == SIGFPE)
            fail("arithmetic exception (an integer division by zero? a GPU returns an unspecified value instead)");
        else if (g_fault_signal == SIGILL)
            fail("undefined behaviour: %s", trap_kind(g_fault_pc));
        else if (in_fiber_guard(a))
            fail("stack overflow (a thread has %d KiB of stack here: a large local array?)", kStackBytes / 1024);
        else {
            fail("invalid memory access at %p", (void*)a);
            fault[0] = 1;
            fault[1] = (uint64_t)a;
        }
        g_current = &g_scheduler;
        g_current_thread = -1;
        abandon_fibers();
    }
    restore_handlers();
    if (!(old_alt.ss_flags & SS_DISABLE)) sigaltstack(&old_alt, nullptr);
    else { stack_t off; memset(&off, 0, sizeof off); off.ss_flags = SS_DISABLE; sigaltstack(&off, nullptr); }
    snprintf(error, error_capacity, "%s", ok ? "" : g_error);
    return ok ? 0 : 1;
}

// Column-major strided-batched SGEMM (cuBLAS semantics; beta == 0 never reads C), accumulated in double:
// a dot product along k where op(A) is transposed (rows of A contiguous), column updates otherwise.
HASTE_EMU_API void haste_emu_gemm(int transA, int transB, long m, long n, long k, float alpha, float beta,
                                  const float* A, long lda, long strideA, const float* B, long ldb, long strideB,
                                  float* C, long ldc, long strideC, long batch) {
    double* acc = (double*)malloc(sizeof(double) * (m > 0 ? m : 1));
    for (long p = 0; p < batch; p++) {
        const float* a = A + p * strideA;
        const float* b = B + p * strideB;
        float* c = C + p * strideC;
        for (long j = 0; j < n; j++) {
            if (transA) {
                for (long i = 0; i < m; i++) {
                    double s = 0;
                    for (long l = 0; l < k; l++) s += (double)a[l + i * lda] * (double)(transB ? b[j + l * ldb] : b[l + j * ldb]);
                    acc[i] = s;
                }
            } else {
                for (long i = 0; i < m; i++) acc[i] = 0;
                for (long l = 0; l < k; l++) {
                    double y = transB ? b[j + l * ldb] : b[l + j * ldb];
                    const float* column = a + l * lda;
                    for (long i = 0; i < m; i++) acc[i] += (double)column[i] * y;
                }
            }
            float* out = c + j * ldc;
            for (long i = 0; i < m; i++)
                out[i] = beta == 0.0f ? (float)((double)alpha * acc[i])
                                      : (float)((double)alpha * acc[i] + (double)beta * (double)out[i]);
        }
    }
    free(acc);
}
"""#
}
