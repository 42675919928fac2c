// haste's thread pool (Parallel.swift): fork-join over task indices 0..<n with the caller taking part.
//
// Why not GCD's concurrentPerform: its workers sleep as soon as a call ends and it wakes them (and one thread more
// than asked) on the next, ~15-25 µs per call on this project's 2-core build machines, where a SiT training step
// makes about a thousand such calls; and it is as wide as the machine, whatever --threads says.
// Here idle workers spin for a while (HASTE_POOL_SPIN_US, default 200 µs) before they sleep on a futex, so
// consecutive ops of a step find them awake, and a job uses at most the `threads` it is given.
//
// Jobs may nest (a task posts a job of its own: CPUBackend.gemmPair splits two products on halves of the threads);
// idle workers help any posted job that has room. A job lives in one of POOL_SLOTS slots. A helper takes a reference
// on the slot before it looks at it and only reads the job's fields while the slot is marked active; a slot is
// reused only when no helper holds a reference, so a helper that was late never claims an index of the next job.
// Every atomic is sequentially consistent (the protocol relies on it in two places: reference then active check,
// and the poster's generation bump then sleeper count).
#define _GNU_SOURCE
#include "CKernels.h"
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define POOL_SLOTS 32
#define POOL_MAX_WORKERS 255

typedef struct {
    _Atomic long next;      // next index to claim
    _Atomic long done;      // indices finished
    _Atomic int helpers;    // workers inside the job now
    _Atomic int refs;       // workers looking at the slot
    long n;
    int maxHelpers;
    haste_pool_task fn;
    void *ctx;
} pool_job;

static pool_job jobs[POOL_SLOTS];
static _Atomic unsigned int used;       // slots owned by a poster
static _Atomic unsigned int active;     // slots whose job may have indices left
static _Atomic unsigned int gen;        // bumped on every post: the futex word idle workers sleep on
static _Atomic int sleepers;
static _Atomic int workers;             // started so far
static _Atomic int allowed;             // workers that may help (threads - 1 of the latest call)
static pthread_mutex_t startLock = PTHREAD_MUTEX_INITIALIZER;
static long spinNanos = -1;
static __thread int insideTask;         // depth of pool tasks on this thread

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/// Runs indices of the job in `slot` if it is active and has room for one more helper; returns whether it ran any.
static int help(int slot) {
    pool_job *j = &jobs[slot];
    atomic_fetch_add(&j->refs, 1);
    int ran = 0;
    if (atomic_load(&active) & (1u << slot)) {
        int h = atomic_load(&j->helpers);
        while (h < j->maxHelpers && !atomic_compare_exchange_weak(&j->helpers, &h, h + 1)) {}
        if (h < j->maxHelpers) {
            insideTask++;
            long i;
            while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
                j->fn(j->ctx, i);
                atomic_fetch_add(&j->done, 1);
                ran = 1;
            }
            insideTask--;
            atomic_fetch_sub(&j->helpers, 1);
        }
    }
    atomic_fetch_sub(&j->refs, 1);
    return ran;
}

static void *worker_main(void *arg) {
    int id = (int)(long)arg;
    for (;;) {
        unsigned int g = atomic_load(&gen);
        int ran = 0;
        if (id < atomic_load(&allowed)) {
            unsigned int mask = atomic_load(&active);
            while (mask) {
                int s = __builtin_ctz(mask);
                mask &= mask - 1;
                ran |= help(s);
            }
        }
        if (ran) continue;
        long start = now_ns();
        int spins = 0;
        while (atomic_load(&gen) == g) {
            cpu_relax();
            if (++spins % 64 == 0 && now_ns() - start > spinNanos) {
                atomic_fetch_add(&sleepers, 1);
                if (atomic_load(&gen) == g) syscall(SYS_futex, (unsigned int *)&gen, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
                atomic_fetch_sub(&sleepers, 1);
                break;
            }
        }
    }
    return NULL;
}

static void start_workers(int count) {
    if (atomic_load(&workers) >= count) return;
    pthread_mutex_lock(&startLock);
    if (spinNanos < 0) {
        const char *s = getenv("HASTE_POOL_SPIN_US");
        long us = s ? atol(s) : 200;
        spinNanos = (us < 0 ? 0 : us) * 1000L;
    }
    while (atomic_load(&workers) < count) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int id = atomic_load(&workers);
        if (pthread_create(&t, &attr, worker_main, (void *)(long)id) != 0) { pthread_attr_destroy(&attr); break; }
        pthread_attr_destroy(&attr);
        atomic_fetch_add(&workers, 1);
    }
    pthread_mutex_unlock(&startLock);
}

/// A free slot with no helper left looking at it, now owned by the caller; -1 when all are taken.
static int claim_slot(void) {
    for (int s = 0; s < POOL_SLOTS; s++) {
        unsigned int bit = 1u << s, u = atomic_load(&used);
        if (u & bit) continue;
        if (atomic_load(&jobs[s].refs) != 0) continue;
        if (atomic_compare_exchange_strong(&used, &u, u | bit)) {
            if (atomic_load(&jobs[s].refs) == 0) return s;
            atomic_fetch_and(&used, ~bit);
        }
    }
    return -1;
}

void haste_pool_run(long n, int threads, haste_pool_task fn, void *ctx) {
    if (n <= 0) return;
    if (threads > POOL_MAX_WORKERS + 1) threads = POOL_MAX_WORKERS + 1;
    int slot = n > 1 && threads > 1 ? claim_slot() : -1;
    if (slot < 0) {                              // one task, one thread, or every slot busy: run here
        for (long i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    if (!insideTask) atomic_store(&allowed, threads - 1);
    start_workers(threads - 1);
    pool_job *j = &jobs[slot];
    j->n = n;
    j->fn = fn;
    j->ctx = ctx;
    j->maxHelpers = (int)(n - 1 < threads - 1 ? n - 1 : threads - 1);
    atomic_store(&j->next, 0);
    atomic_store(&j->done, 0);
    atomic_store(&j->helpers, 0);
    atomic_fetch_or(&active, 1u << slot);
    atomic_fetch_add(&gen, 1);
    if (atomic_load(&sleepers) > 0) syscall(SYS_futex, (unsigned int *)&gen, FUTEX_WAKE_PRIVATE, j->maxHelpers, NULL, NULL, 0);

    insideTask++;
    long i;
    while ((i = atomic_fetch_add(&j->next, 1)) < n) {
        fn(ctx, i);
        atomic_fetch_add(&j->done, 1);
    }
    insideTask--;
    atomic_fetch_and(&active, ~(1u << slot));    // no index left: late helpers leave at once
    for (int spins = 0; atomic_load(&j->done) < n; spins++) {
        if (spins < 4096) cpu_relax(); else sched_yield();
    }
    atomic_fetch_and(&used, ~(1u << slot));
}
