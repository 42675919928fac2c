/// The C++ text compiled before every kernel family in the emulator (`-DHASTE_EMULATOR`), in three parts: the block
/// scheduler (cooperative fibers), CUDA's built-ins for the subset documented in Sources/HasteCUDA/Kernels/Prelude.swift
/// (EmulatorRuntime+Builtins.swift), and the launch entry point `haste_emu_run`, fault handling, the reference GEMM
/// `haste_emu_gemm` (EmulatorRuntime+Launch.swift).
enum EmulatorRuntime {
    static let header = scheduler + sharedRaces + builtins + globalRaces + launch

    /// Includes, the launch's state, fibers and the block scheduler.
    static let scheduler = #"""
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

// The race check (HASTE_EMU_SHARED_RACES) looks at the kernels' loads and stores, not the runtime's own: nothing
// here is instrumented (nor inlined into instrumented code).
#ifdef HASTE_EMU_SHARED_RACES
#pragma clang attribute push (__attribute__((no_sanitize("thread"))), apply_to = function)
#endif
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

#ifdef HASTE_EMU_SHARED_RACES
static void shared_races_block();              // EmulatorRuntime+SharedRaces.swift
#endif
// Runs one block; false when the launch failed.
static bool run_block() {
    poison_shared();
#ifdef HASTE_EMU_SHARED_RACES
    shared_races_block();
#endif
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
#ifdef HASTE_EMU_SHARED_RACES
#pragma clang attribute pop
#endif

"""#
}
