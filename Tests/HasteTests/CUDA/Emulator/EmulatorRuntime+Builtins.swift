extension EmulatorRuntime {
    /// The CUDA subset: index variables, qualifiers, barriers, warp shuffles and votes, atomics, math, bit casts.
    static let builtins = #"""
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
#ifdef HASTE_EMU_SHARED_RACES
    haste_emu::Warp& w = haste_emu::warp_of(haste_emu::g_current_thread);
    if (w.arrived + 1 == w.size) haste_emu::g_syncwarp[haste_emu::g_current_thread >> 5]++;   // completed: before anyone goes on
#endif
    haste_emu::warp_barrier();
}

namespace haste_emu {
// cp.async (haste_cp_async<BYTES>): the destination is poisoned (0xFF: NaN floats) at the issue and the copy lands at the
// issuing thread's wait, so reading before the wait, or issuing while other threads still read the destination
// (no barrier between), gives wrong values instead of passing by luck.
struct AsyncCopy { void* dst; const void* src; int bytes; };
static AsyncCopy* g_async[1024];
static int g_async_count[1024], g_async_capacity[1024];
HASTE_EMU_UNCHECKED static inline void cp_async(void* dst, const void* src, int bytes) {
    int t = g_current_thread;
    if (((uintptr_t)dst | (uintptr_t)src) % (uintptr_t)bytes != 0) abort_thread("cp.async of %d bytes at misaligned %p ← %p", bytes, dst, src);
    if (g_async_count[t] == g_async_capacity[t]) {
        g_async_capacity[t] = g_async_capacity[t] ? 2 * g_async_capacity[t] : 64;
        g_async[t] = (AsyncCopy*)realloc(g_async[t], sizeof(AsyncCopy) * g_async_capacity[t]);
    }
#ifdef HASTE_EMU_SHARED_RACES
    shared_async_issue(dst, bytes, (uintptr_t)__builtin_return_address(0));   // not inlined: a place in the kernel
    race_access((void*)src, (size_t)bytes, false, (uintptr_t)__builtin_return_address(0));   // the source: a read
#endif
    memset(dst, 0xFF, bytes);
    g_async[t][g_async_count[t]++] = {dst, src, bytes};
}
HASTE_EMU_UNCHECKED static inline void cp_async_wait() {
    int t = g_current_thread;
    for (int i = 0; i < g_async_count[t]; i++) {
        memcpy(g_async[t][i].dst, g_async[t][i].src, g_async[t][i].bytes);
#ifdef HASTE_EMU_SHARED_RACES
        shared_async_landed(g_async[t][i].dst, g_async[t][i].bytes);
#endif
    }
    g_async_count[t] = 0;
}
} // namespace haste_emu

namespace haste_emu {
template <class T> HASTE_EMU_UNCHECKED static inline T shuffle(unsigned mask, T v, int mode, int arg, int width) {
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
HASTE_EMU_UNCHECKED static inline unsigned ballot(unsigned mask, int predicate) {
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

namespace haste_emu {
// Bytes atomics touched in this launch (a hash set of addresses, 0 = empty) and the first block that touched each:
// exempt from the comparison of blocks' writes (check_block_writes); with the race check's instrumentation, another
// block's plain read of them is a race in either order (between_blocks_read, between_blocks_atomic in
// EmulatorRuntime+GlobalRaces.swift; blocks run in order, so a block reading after its own atomic is the last to
// have touched the byte, or the first one's read is found at the next block's atomic).
static bool g_between_blocks;   // the race checks between blocks are on (EmulatorRuntime+GlobalRaces.swift)
static int g_block_index;       // the running block's linear index
static uintptr_t* g_atomic_set;
static int* g_atomic_block;
static size_t g_atomic_capacity, g_atomic_count;

// The first block whose atomic touched byte a in this launch, or -1.
static int atomic_block(uintptr_t a) {
    if (!g_atomic_count) return -1;
    for (size_t i = (a * 0x9E3779B97F4A7C15ull) & (g_atomic_capacity - 1);; i = (i + 1) & (g_atomic_capacity - 1)) {
        if (g_atomic_set[i] == a) return g_atomic_block[i];
        if (g_atomic_set[i] == 0) return -1;
    }
}
static bool atomic_touched(uintptr_t a) { return atomic_block(a) != -1; }

static void note_atomic_byte(uintptr_t a, int block) {
    if (2 * (g_atomic_count + 1) > g_atomic_capacity) {
        uintptr_t* old = g_atomic_set;
        int* old_block = g_atomic_block;
        size_t old_capacity = g_atomic_capacity;
        g_atomic_capacity = old_capacity ? old_capacity * 2 : 1024;
        g_atomic_set = (uintptr_t*)calloc(g_atomic_capacity, sizeof(uintptr_t));
        g_atomic_block = (int*)calloc(g_atomic_capacity, sizeof(int));
        g_atomic_count = 0;
        for (size_t i = 0; i < old_capacity; i++) if (old[i]) note_atomic_byte(old[i], old_block[i]);
        free(old); free(old_block);
    }
    size_t i = (a * 0x9E3779B97F4A7C15ull) & (g_atomic_capacity - 1);
    while (g_atomic_set[i] != 0 && g_atomic_set[i] != a) i = (i + 1) & (g_atomic_capacity - 1);
    if (g_atomic_set[i] == 0) { g_atomic_set[i] = a; g_atomic_block[i] = block; g_atomic_count++; }
}

#ifdef HASTE_EMU_SHARED_RACES
static void fence_thread();                                  // the hand-over's fences (EmulatorRuntime+GlobalRaces.swift)
static void handover_read(const void* p, size_t bytes, uintptr_t pc);
#endif

// An atomic's bytes: with the race check's instrumentation, checked against other threads' plain accesses and, in
// device memory between blocks, other blocks' plain reads (checked_access → between_blocks_atomic, which also notes
// a release with unfenced writes); between blocks, exempt from the comparison of writes. `pc`: the atomic's caller,
// in the kernel.
static inline void note_atomic(void* p, size_t bytes, uintptr_t pc) {
#ifdef HASTE_EMU_SHARED_RACES
    checked_access(p, bytes, true, pc, true);
#endif
    if (!g_between_blocks) return;
    for (size_t i = 0; i < bytes; i++) note_atomic_byte((uintptr_t)p + i, g_block_index);
}
} // namespace haste_emu

// Atomics: blocks and threads never run at the same time, so plain read-modify-write is atomic here. (Their own
// loads and stores are not instrumented, HASTE_EMU_UNCHECKED; note_atomic checks them as atomics.)
#define HASTE_EMU_ATOMIC(p) haste_emu::note_atomic(p, sizeof *(p), (uintptr_t)__builtin_return_address(0))
HASTE_EMU_UNCHECKED static inline float atomicAdd(float* p, float v) { HASTE_EMU_ATOMIC(p); float o = *p; *p = o + v; return o; }
HASTE_EMU_UNCHECKED static inline double atomicAdd(double* p, double v) { HASTE_EMU_ATOMIC(p); double o = *p; *p = o + v; return o; }
HASTE_EMU_UNCHECKED static inline int atomicAdd(int* p, int v) { HASTE_EMU_ATOMIC(p); int o = *p; *p = (int)((unsigned)o + (unsigned)v); return o; }
HASTE_EMU_UNCHECKED static inline unsigned atomicAdd(unsigned* p, unsigned v) { HASTE_EMU_ATOMIC(p); unsigned o = *p; *p = o + v; return o; }
HASTE_EMU_UNCHECKED static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    HASTE_EMU_ATOMIC(p); unsigned long long o = *p; *p = o + v; return o;
}
HASTE_EMU_UNCHECKED static inline int atomicCAS(int* p, int compare, int v) { HASTE_EMU_ATOMIC(p); int o = *p; if (o == compare) *p = v; return o; }
HASTE_EMU_UNCHECKED static inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned v) {
    HASTE_EMU_ATOMIC(p); unsigned o = *p; if (o == compare) *p = v; return o;
}
HASTE_EMU_UNCHECKED static inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare, unsigned long long v) {
    HASTE_EMU_ATOMIC(p); unsigned long long o = *p; if (o == compare) *p = v; return o;
}
HASTE_EMU_UNCHECKED static inline int atomicMax(int* p, int v) { HASTE_EMU_ATOMIC(p); int o = *p; if (v > o) *p = v; return o; }
HASTE_EMU_UNCHECKED static inline int atomicMin(int* p, int v) { HASTE_EMU_ATOMIC(p); int o = *p; if (v < o) *p = v; return o; }
HASTE_EMU_UNCHECKED static inline unsigned atomicMax(unsigned* p, unsigned v) { HASTE_EMU_ATOMIC(p); unsigned o = *p; if (v > o) *p = v; return o; }
HASTE_EMU_UNCHECKED static inline unsigned atomicMin(unsigned* p, unsigned v) { HASTE_EMU_ATOMIC(p); unsigned o = *p; if (v < o) *p = v; return o; }
HASTE_EMU_UNCHECKED static inline int atomicExch(int* p, int v) { HASTE_EMU_ATOMIC(p); int o = *p; *p = v; return o; }
HASTE_EMU_UNCHECKED static inline unsigned atomicExch(unsigned* p, unsigned v) { HASTE_EMU_ATOMIC(p); unsigned o = *p; *p = v; return o; }
HASTE_EMU_UNCHECKED static inline float atomicExch(float* p, float v) { HASTE_EMU_ATOMIC(p); float o = *p; *p = v; return o; }

// haste_ldcg's read in the emulator: the one hand-over between blocks of a launch, not a race (unchecked), but the
// block that wrote the bytes must have fenced them before its atomic (handover_read); haste_threadfence's fence.
HASTE_EMU_UNCHECKED static inline float haste_emu_ldcg(const float* p) {
#ifdef HASTE_EMU_SHARED_RACES
    haste_emu::handover_read(p, sizeof *p, (uintptr_t)__builtin_return_address(0));
#endif
    return *p;
}
static inline void haste_emu_threadfence() {
#ifdef HASTE_EMU_SHARED_RACES
    haste_emu::fence_thread();
#endif
}

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

"""#
}
