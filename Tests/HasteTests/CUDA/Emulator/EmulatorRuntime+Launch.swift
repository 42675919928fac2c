extension EmulatorRuntime {
    /// Kernel signatures and trampolines' call, fault handling, `haste_emu_run` and `haste_emu_gemm`.
    static let launch = #"""
// Not instrumented for the race check (as the scheduler): the runtime's own loads and stores.
#ifdef HASTE_EMU_SHARED_RACES
#pragma clang attribute push (__attribute__((no_sanitize("thread"))), apply_to = function)
#endif
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

// Race check between blocks (g_between_blocks): the device memory a launch can reach (the allocations of its pointer
// arguments: Region, EmulatorRuntime+GlobalRaces.swift) is compared after every block with its state before it; a
// byte changed by two different blocks, or by a block after another block read it, not through an atomic, is a
// race on a GPU, where blocks run concurrently in any order (here one after another, so a plain `+=` from many
// blocks would otherwise give the right sum). Reads are seen with the race check's instrumentation only.
static bool check_block_writes(int block) {
    for (int r = 0; r < g_region_count; r++) {
        Region& g = g_regions[r];
        for (size_t off = 0; off < g.size; off += 64) {
            size_t len = g.size - off < 64 ? g.size - off : 64;
            if (memcmp(g.base + off, g.shadow + off, len) == 0) continue;
            for (size_t b = off; b < off + len; b++) {
                if (g.base[b] == g.shadow[b] || atomic_touched((uintptr_t)(g.base + b))) continue;
                int previous = g.blocks[b].writer, reader = g.blocks[b].reader;
                char who[48];
                if (reader == -2 || (reader >= 0 && reader != block)) {
                    fail("this block changed byte %zu of the %zu-byte allocation at %p, which %s read earlier in this "
                         "launch: a race on a GPU (blocks run concurrently, in any order: the read may see either value)",
                         b, g.size, (void*)g.base, block_name(reader, who, sizeof who));
                    return false;
                }
                if (previous >= 0 && previous != block) {
                    fail("this block and %s both wrote byte %zu of the %zu-byte allocation at %p without an atomic: a race "
                         "on a GPU (blocks run concurrently, in any order)", block_name(previous, who, sizeof who), b,
                         g.size, (void*)g.base);
                    return false;
                }
                g.blocks[b].writer = block;
            }
            memcpy(g.shadow + off, g.base + off, len);
        }
    }
    return true;
}

static bool run_blocks(const unsigned* grid) {
    int block = 0;
    for (unsigned z = 0; z < grid[2]; z++)
        for (unsigned y = 0; y < grid[1]; y++)
            for (unsigned x = 0; x < grid[0]; x++, block++) {
                g_blockIdx = {x, y, z};
                g_block_index = block;
                if (!run_block()) return false;
                if (g_between_blocks && !check_block_writes(block)) return false;
            }
    return !g_failed;
}
} // namespace haste_emu

// Runs a launch: every block in order (`shared_bytes` of dynamic shared memory at `dynamic_shared`). `options`:
// HASTE_EMU_ALTERNATE_ORDER (threads of even blocks start in reverse order), HASTE_EMU_BETWEEN_BLOCKS (the race
// checks between blocks on `regions`). `regions`: (address, bytes) pairs of the device memory the launch can reach,
// for the race checks; none turns them off. Returns 0, or 1 with a message in `error`. After a fault, fault[0] is
// 1 for an invalid memory access (fault[1] its address), 2 for any other fault; fault[2] the faulting instruction's
// offset in the shared object whose path fault[3] points to (0 when unknown).
#define HASTE_EMU_ALTERNATE_ORDER 1
#define HASTE_EMU_BETWEEN_BLOCKS 2
HASTE_EMU_API int haste_emu_run(void (*tramp)(void**), void** args, const char* kernel, const unsigned* grid,
                                const unsigned* block, char* dynamic_shared, size_t shared_bytes, int options,
                                const uint64_t* regions, int region_count, char* error, size_t error_capacity,
                                uint64_t* fault) {
    using namespace haste_emu;
    g_alternate_order = (options & HASTE_EMU_ALTERNATE_ORDER) != 0;
    g_between_blocks = region_count > 0 && (options & HASTE_EMU_BETWEEN_BLOCKS) != 0;
    g_region_count = region_count;
    g_regions = region_count > 0 ? (Region*)calloc((size_t)region_count, sizeof(Region)) : nullptr;
    for (int r = 0; r < region_count; r++) {
        Region& g = g_regions[r];
        g.base = (unsigned char*)(uintptr_t)regions[2 * r];
        g.size = (size_t)regions[2 * r + 1];
        if (!g_between_blocks) continue;
        g.shadow = (unsigned char*)malloc(g.size ? g.size : 1);
        g.blocks = (Blocks*)malloc(sizeof(Blocks) * (g.size ? g.size : 1));
        memcpy(g.shadow, g.base, g.size);
        memset(g.blocks, 0xFF, sizeof(Blocks) * g.size);   // -1: none
    }
    if (g_atomic_count) { memset(g_atomic_set, 0, sizeof(uintptr_t) * g_atomic_capacity); g_atomic_count = 0; }
    g_tramp = tramp; g_args = args; g_kernel = kernel; g_dynamic_shared = dynamic_shared;
    g_failed = false; g_error[0] = 0;
#ifdef HASTE_EMU_SHARED_RACES
    shared_races_launch(shared_bytes);
#else
    (void)shared_bytes;
#endif
    memset(g_async_count, 0, sizeof g_async_count);   // copies a failed launch left unwaited
    fault[0] = fault[1] = fault[2] = fault[3] = 0;
    g_gridDim = {grid[0], grid[1], grid[2]};
    g_blockDim = {block[0], block[1], block[2]};
    g_threadIdx = {0, 0, 0};                   // one-dimensional blocks only ever set .x
    g_block_threads = (int)(block[0] * block[1] * block[2]);
#ifdef HASTE_EMU_SHARED_RACES
    if (g_between_blocks) fences_launch((size_t)grid[0] * grid[1] * grid[2]);
#endif

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
#ifdef HASTE_EMU_SHARED_RACES
        Dl_info info;                          // a race's place: where the second access is
        if (!ok && g_race_pc && dladdr((void*)g_race_pc, &info) && info.dli_fname && info.dli_fbase) {
            fault[0] = 2;
            fault[2] = (uint64_t)(g_race_pc - 1 - (uintptr_t)info.dli_fbase);
            fault[3] = (uint64_t)(uintptr_t)info.dli_fname;
        }
#endif
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
    for (int r = 0; r < region_count; r++) { free(g_regions[r].shadow); free(g_regions[r].blocks); }
    free(g_regions);
    g_regions = nullptr; g_region_count = 0; g_between_blocks = false;
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
#ifdef HASTE_EMU_SHARED_RACES
#pragma clang attribute pop
#endif
"""#
}
