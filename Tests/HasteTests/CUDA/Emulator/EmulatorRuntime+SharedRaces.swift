extension EmulatorRuntime {
    /// The race check (`EmulatedDriver.checksSharedRaces`): which accesses of two threads no barrier orders (shared
    /// memory here, device memory in +GlobalRaces.swift), whatever order threads and blocks happen to run in.
    static let sharedRaces = #"""
// ---- races (HASTE_EMU_SHARED_RACES) ----
// The kernels are compiled with -fsanitize=thread, whose instrumentation calls __tsan_read4(p), __tsan_write8(p), …
// before every load and store (atomics, function entries and memcpy/memset left out); those hooks are defined
// here (no ThreadSanitizer runtime is linked) and look at the block's shared memory, dynamic and static, and at
// the launch's device memory (global_access, EmulatorRuntime+GlobalRaces.swift: the same rules per byte, and
// between blocks). The atomics (EmulatorRuntime+Builtins.swift) call checked_access themselves: an atomic is a
// write that races with another thread's plain access, not with another atomic.
// Per byte they keep the last write (thread, barrier generation, the warp's __syncwarp count, where) and the
// last read(s) of the current generation. Two accesses by different threads, at least one a write, in the same
// generation (no __syncthreads() completed between them; for two lanes of one warp, no __syncwarp() either) are
// a race on a GPU, where the block's warps run concurrently in any order; here the fibers run one order, which
// may hide it. cp.async: its bytes are being written from the issue until the issuing thread's wait, and may be
// touched by another thread only after a barrier that follows that wait. Shuffles, ldmatrix and mma do not order
// memory (a lane's write read by another lane needs __syncwarp()).
// Runtime functions whose own loads and stores (memset and memcpy of a constant size become plain ones) the check
// must not see: not instrumented, and so not inlined into instrumented kernels either.
#ifdef HASTE_EMU_SHARED_RACES
#define HASTE_EMU_UNCHECKED __attribute__((no_sanitize("thread"), noinline))
#else
#define HASTE_EMU_UNCHECKED
#endif
namespace haste_emu {
#ifdef HASTE_EMU_SHARED_RACES
#pragma clang attribute push (__attribute__((no_sanitize("thread"))), apply_to = function)   // the check's own code

struct SharedByte {
    unsigned block;                // g_block_serial at its last access: older entries count as untouched
    unsigned wgen, rgen;           // the block barrier generation of the last write, of the read(s) since
    unsigned short wsync, rsync;   // the warp's __syncwarp count then
    short writer, reader;          // threads; -1 none; reader -2: several threads read in rgen; writer -2: atomics
                                   // of several threads in wgen (no warp kept: a plain access after them in wgen is
                                   // reported even where their lanes and it passed a __syncwarp())
    short pending;                 // a cp.async of this thread writes the byte and has not been waited for; -1 none
    bool watomic;                  // the last write (or the writes of writer -2) by atomics
    uintptr_t wpc, rpc;            // where (return addresses into the kernel)
};
static SharedByte *g_dynamic_shadow, *g_static_shadow;
static size_t g_dynamic_capacity, g_shared_bytes;
static unsigned g_block_serial = 1;
static unsigned short g_syncwarp[32];
static uintptr_t g_race_pc;

static SharedByte* shared_byte(uintptr_t a, const char** space, size_t* offset) {
    uintptr_t d = (uintptr_t)g_dynamic_shared;
    if (a - d < g_shared_bytes) { *space = "dynamic"; *offset = a - d; return g_dynamic_shadow + (a - d); }
#if defined(__linux__)
    uintptr_t s = (uintptr_t)__start_haste_shared;
    size_t n = (size_t)(__stop_haste_shared - __start_haste_shared);
    if (s && a - s < n) {
        if (!g_static_shadow) g_static_shadow = (SharedByte*)calloc(n, sizeof(SharedByte));
        *space = "static"; *offset = a - s;
        return g_static_shadow + (a - s);
    }
#endif
    return nullptr;
}

// "{pc 0x…}": an access's place as an offset into this library (EmulatedDriver symbolizes it).
static const char* pc_mark(uintptr_t pc, char* buffer, size_t capacity) {
    Dl_info info;
    if (pc && dladdr((void*)pc, &info) && info.dli_fbase) snprintf(buffer, capacity, "{pc 0x%lx}", (unsigned long)(pc - 1 - (uintptr_t)info.dli_fbase));
    else snprintf(buffer, capacity, "an unknown place");
    return buffer;
}

// A race's report. `allocation`: null for shared memory (`space` "dynamic" or "static"), else the device allocation
// (`allocation_bytes` long) the byte lies in.
static void report_race(const char* access, const char* space, size_t offset, const void* allocation,
                        size_t allocation_bytes, const char* other, int thread, uintptr_t other_pc, uintptr_t pc,
                        const char* why) {
    char place[64], memory[96];
    g_race_pc = pc;
    const char* who = thread == -2 ? "other threads" : "thread";
    char number[16] = "";
    if (thread >= 0) snprintf(number, sizeof number, " %d", thread);
    if (allocation) snprintf(memory, sizeof memory, "the %zu-byte allocation at %p", allocation_bytes, allocation);
    else snprintf(memory, sizeof memory, "the %s shared memory", space);
    abort_thread("a race in %s memory: this thread %s byte %zu of %s, which %s%s %s at %s (%s)",
                 allocation ? "device" : "shared", access, offset, memory, who, number, other,
                 pc_mark(other_pc, place, sizeof place), why);
}

// The accesses of the running thread to `n` bytes whose entries start at `e` (the first at `offset` in its space):
// a race with an access of another thread no barrier orders, then this access recorded. `atomic`: an atomic's
// read-modify-write (a write), which races with plain accesses only.
static void check_bytes(SharedByte* e, size_t n, bool write, uintptr_t pc, const char* space, size_t offset,
                        const void* allocation, size_t allocation_bytes, bool atomic = false) {
    const int t = g_current_thread;
    const unsigned gen = g_block_gen;
    const unsigned short sync = g_syncwarp[t >> 5];
    const char* access = atomic ? "changes by an atomic" : write ? "writes" : "reads";
    for (size_t i = 0; i < n; i++, e++) {
        if (e->block != g_block_serial) *e = SharedByte{g_block_serial, 0, 0, 0, 0, -1, -1, -1, false, 0, 0};
        if (e->pending >= 0)
            report_race(access, space, offset + i, allocation, allocation_bytes, "may still be writing by a cp.async issued",
                        e->pending, e->wpc, pc,
                        "the copy lands at any time until that thread's cp.async wait; other threads may touch the "
                        "bytes only after a __syncthreads() that follows the wait");
        const bool lane = e->writer >= 0 && (e->writer >> 5) == (t >> 5);   // the writer is a lane of this warp
        if (e->writer != -1 && e->writer != t && e->wgen == gen && !(lane && e->wsync != sync) && !(atomic && e->watomic))
            report_race(access, space, offset + i, allocation, allocation_bytes,
                        e->watomic ? "changed by an atomic" : "wrote", e->writer, e->wpc, pc,
                        lane ? "a lane of this warp: no __syncwarp() or __syncthreads() between"
                             : e->watomic ? "no __syncthreads() between: an atomic is atomic only against other atomics"
                                          : "no __syncthreads() between");
        if (write) {
            if (e->reader != -1 && e->reader != t && e->rgen == gen
                && !(e->reader >= 0 && (e->reader >> 5) == (t >> 5) && e->rsync != sync))
                report_race(access, space, offset + i, allocation, allocation_bytes, "read", e->reader, e->rpc, pc,
                            "no __syncthreads() between: the read may come after this write on a GPU");
            // An atomic after this thread's own plain write of this generation leaves that write as the record:
            // other threads' atomics race with it.
            if (atomic && e->writer == t && e->wgen == gen && !e->watomic) continue;
            const bool several = atomic && e->watomic && e->wgen == gen && e->writer != -1 && e->writer != t;
            e->writer = several ? (short)-2 : (short)t; e->watomic = atomic; e->wgen = gen; e->wsync = sync; e->wpc = pc;
        } else if (e->reader == -1 || e->rgen != gen) {
            e->reader = (short)t; e->rgen = gen; e->rsync = sync; e->rpc = pc;
        } else if (e->reader != t) {
            e->reader = -2;                                // several readers: any later write by one races
        }
    }
}

static void global_access(uintptr_t a, size_t size, bool write, uintptr_t pc, bool atomic = false);   // +GlobalRaces.swift

// An access, or (`atomic`: from the atomics of EmulatorRuntime+Builtins.swift, which are not instrumented) an
// atomic's bytes.
__attribute__((noinline)) static void checked_access(void* p, size_t size, bool write, uintptr_t pc, bool atomic = false) {
    if (g_current_thread < 0) return;                      // the runtime between threads
    const char* space; size_t offset;
    SharedByte* e = shared_byte((uintptr_t)p, &space, &offset);
    if (e) check_bytes(e, size, write, pc, space, offset, nullptr, 0, atomic);
    else global_access((uintptr_t)p, size, write, pc, atomic);
}
// Every instrumented access (and cp.async's source). Most are to the thread's own locals (arrays -O1 keeps in
// memory, passed by pointer): they return here, before the check's frame is set up.
static inline void race_access(void* p, size_t size, bool write, uintptr_t pc) {
    if ((uintptr_t)p - (uintptr_t)g_current->stack < (uintptr_t)kStackBytes) return;
    checked_access(p, size, write, pc);
}

// The launch's dynamic shared bytes (haste_emu_run) and a new block (run_block): every shadow entry untouched.
static void global_pages_launch();                               // EmulatorRuntime+GlobalRaces.swift
static void shared_races_launch(size_t bytes) {
    global_pages_launch();
    if (bytes > g_dynamic_capacity) {
        free(g_dynamic_shadow);
        g_dynamic_shadow = (SharedByte*)calloc(bytes, sizeof(SharedByte));
        g_dynamic_capacity = g_dynamic_shadow ? bytes : 0;
    }
    g_shared_bytes = bytes < g_dynamic_capacity ? bytes : g_dynamic_capacity;
    g_race_pc = 0;
}
static void global_pages_block();                                // EmulatorRuntime+GlobalRaces.swift
static void fences_block();
static void shared_races_block() {
    g_block_serial++; memset(g_syncwarp, 0, sizeof g_syncwarp); global_pages_block(); fences_block();
}

// cp.async of thread t: a write at the issue (it may land at once), pending until t's wait, a write at the wait.
static void shared_async_issue(void* dst, int bytes, uintptr_t pc) {
    const char* space; size_t offset;
    SharedByte* e = shared_byte((uintptr_t)dst, &space, &offset);
    if (!e) return;                                        // not shared memory: faults when copied
    check_bytes(e, (size_t)bytes, true, pc, space, offset, nullptr, 0);
    for (int i = 0; i < bytes; i++) { e[i].pending = (short)g_current_thread; e[i].wpc = pc; }
}
static void shared_async_landed(void* dst, int bytes) {
    const char* space; size_t offset;
    SharedByte* e = shared_byte((uintptr_t)dst, &space, &offset);
    int t = g_current_thread;
    for (int i = 0; e && i < bytes; i++) {
        e[i].pending = -1; e[i].writer = (short)t; e[i].watomic = false; e[i].wgen = g_block_gen; e[i].wsync = g_syncwarp[t >> 5];
    }
}
#define HASTE_EMU_HOOK extern "C" __attribute__((no_sanitize("thread"), visibility("hidden"), used))
#define HASTE_EMU_ACCESS_HOOKS(N) \
    HASTE_EMU_HOOK void __tsan_read##N(void* p) { race_access(p, N, false, (uintptr_t)__builtin_return_address(0)); } \
    HASTE_EMU_HOOK void __tsan_write##N(void* p) { race_access(p, N, true, (uintptr_t)__builtin_return_address(0)); } \
    HASTE_EMU_HOOK void __tsan_unaligned_read##N(void* p) { race_access(p, N, false, (uintptr_t)__builtin_return_address(0)); } \
    HASTE_EMU_HOOK void __tsan_unaligned_write##N(void* p) { race_access(p, N, true, (uintptr_t)__builtin_return_address(0)); }
HASTE_EMU_ACCESS_HOOKS(1)
HASTE_EMU_ACCESS_HOOKS(2)
HASTE_EMU_ACCESS_HOOKS(4)
HASTE_EMU_ACCESS_HOOKS(8)
HASTE_EMU_ACCESS_HOOKS(16)
HASTE_EMU_HOOK void __tsan_read_range(void* p, unsigned long n) { race_access(p, n, false, (uintptr_t)__builtin_return_address(0)); }
HASTE_EMU_HOOK void __tsan_write_range(void* p, unsigned long n) { race_access(p, n, true, (uintptr_t)__builtin_return_address(0)); }
HASTE_EMU_HOOK void __tsan_init() {}
HASTE_EMU_HOOK void __tsan_func_entry(void*) {}
HASTE_EMU_HOOK void __tsan_func_exit() {}
#pragma clang attribute pop
#endif
} // namespace haste_emu

"""#
}
