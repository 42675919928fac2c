#!/usr/bin/env python3
"""haste's AVX-512 sgemm (Sources/CKernels/sgemm.c, and variants of it) against torch.mm, called alternately in one
process, so that every side sees the same disturbances of a shared machine: the medians and the per-call paired
ratios stay comparable where separate runs swing by 20% or more (2-vCPU cloud guests).

    TORCH_PYTHON=/path/to/python Scripts/bench_gemm_paired.py [--threads 2] [--seconds 6]
        [--shape "1024 3072 768 0 1" ...] [--variant NAME=path/to/modified/sgemm.c ...] [--split auto|rows|columns]

A shape is "m n k transA transB" (row-major C = op(A)·op(B), as `haste bench ops`' gemm rows). Each side runs
after a 4 ms pause (so neither side's spinning pool threads take the other's cores). haste's products run as
AVX512Sgemm.run does for products of more than 512 rows (--split auto): n <= 2m as runRows (rows split in whole
8-row tiles, each thread packing all of B for itself), else as runColumns (columns split in whole 48-column panels,
each thread packing its own B); haste_sgemm_columns with NC columns at a time either way. --split rows|columns
forces one. Variants are
copies of sgemm.c with changes (a tile, a blocking constant, a prefetch): each is compiled into the same library
under renamed symbols. Output per shape: median/best GFLOP/s of each side and, in brackets, the median over calls
of (time of `haste`) / (time of this side): above 1 means this side is faster.
Caveat (measured on a 2-vCPU Zen 4 guest): for calls under ~10 ms haste's times are bimodal. A haste call right
after a torch call often shares a vCPU with torch's OpenMP worker, still spinning, and takes ~3 ms longer
(1024x2048x384: 7.5-8.3 ms in 16 of 73 calls, 10.6-11.5 ms in the rest), so haste's median understates it there
while its best does not; with a 30 ms pause both sides turn bimodal (idle vCPUs are slow to resume). Compare
variants of haste with each other (they see the same), and read "best" for the kernel against torch.
Needs clang (the Swift toolchain's) and an x86-64 CPU with AVX-512F; PyTorch never runs in CI.
"""
import argparse, ctypes, os, random, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = r"""
#include <pthread.h>
#include <stdatomic.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
typedef void (*colfn)(int, int, const void *, long, long, float, const float *, long, const float *, long, float,
                      float *, long, long, long, long, const float *);
#define DECL(i) void cols_##i(int, int, const void *, long, long, float, const float *, long, const float *, long, \
                               float, float *, long, long, long, long, const float *);
VARIANT_DECLS
static colfn fns[] = { VARIANT_FNS };
static struct { colfn f; int ta, tb, rows; long m, n, k, lda, ldb, nc; const float *a, *b; float *c; int parts; } job;
static _Atomic int gen, done;
static int started;
static long nowns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000L + t.tv_nsec; }
static void part(int i) {
    if (job.rows) {    /* AVX512Sgemm.runRows: whole 8-row tiles per thread, all columns, each thread packing all of B */
        long per = ((job.m + 7) / 8 + job.parts - 1) / job.parts * 8, i0 = i * per, i1 = i0 + per < job.m ? i0 + per : job.m;
        if (i0 < i1) job.f(job.ta, job.tb, 0, i1 - i0, job.k, 1.0f, job.ta ? job.a + i0 : job.a + i0 * job.lda, job.lda,
                           job.b, job.ldb, 0.0f, job.c + i0 * job.n, job.n, 0, job.n, job.nc, 0);
        return;
    }
    long per = ((job.n + 47) / 48 + job.parts - 1) / job.parts * 48, j0 = i * per, j1 = j0 + per < job.n ? j0 + per : job.n;
    if (j0 < j1) job.f(job.ta, job.tb, 0, job.m, job.k, 1.0f, job.a, job.lda, job.b, job.ldb, 0.0f, job.c, job.n, j0, j1, job.nc, 0);
}
static void *worker(void *arg) {
    int id = (int)(long)arg, g = 0;
    for (;;) {
        long t0 = nowns();
        while (atomic_load(&gen) == g) {
            __builtin_ia32_pause();
            if (nowns() - t0 > 200000) syscall(SYS_futex, (int *)&gen, FUTEX_WAIT_PRIVATE, g, 0, 0, 0);
        }
        g = atomic_load(&gen);
        part(id);
        atomic_fetch_add(&done, 1);
    }
    return 0;
}
void run(int v, int threads, long m, long n, long k, int ta, int tb, const float *a, const float *b, float *c, long nc,
         int rows) {
    job.rows = rows; job.f = fns[v]; job.ta = ta; job.tb = tb; job.m = m; job.n = n; job.k = k; job.lda = ta ? m : k; job.ldb = tb ? k : n;
    job.nc = nc; job.a = a; job.b = b; job.c = c; job.parts = threads;
    for (; started < threads - 1; started++) { pthread_t t; pthread_create(&t, 0, worker, (void *)(long)(started + 1)); }
    int d = atomic_load(&done);
    atomic_fetch_add(&gen, 1);
    syscall(SYS_futex, (int *)&gen, FUTEX_WAKE_PRIVATE, threads, 0, 0, 0);
    part(0);
    while (atomic_load(&done) - d < threads - 1) __builtin_ia32_pause();
}
"""


def build(variants, tmp):
    """Compiles each sgemm.c variant under renamed symbols plus convpack.c and the driver into one library."""
    flags = ["-O2", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-I", os.path.join(ROOT, "Sources/CKernels/include")]
    objs = []
    for i, (_, path) in enumerate(variants):
        rename = [f"-D{s}={s}_v{i}" for s in ("haste_sgemm_columns", "haste_sgemm_block", "haste_sgemm_pack_b",
                                              "haste_sgemm_kc_step", "haste_sgemm_packed_b_floats",
                                              "haste_thread_scratch_f32")]
        obj = os.path.join(tmp, f"v{i}.o")
        subprocess.run(["clang", *flags, *rename, f"-Dhaste_sgemm_columns_v{i}=cols_{i}", "-c", path, "-o", obj], check=True)
        objs.append(obj)
    conv = os.path.join(tmp, "convpack.o")
    subprocess.run(["clang", *flags, "-c", os.path.join(ROOT, "Sources/CKernels/convpack.c"), "-o", conv], check=True)
    driver = os.path.join(tmp, "driver.c")
    with open(driver, "w") as f:
        f.write(DRIVER.replace("VARIANT_DECLS", " ".join(f"DECL({i})" for i in range(len(variants))))
                .replace("VARIANT_FNS", ", ".join(f"cols_{i}" for i in range(len(variants)))))
    lib = os.path.join(tmp, "libpaired.so")
    # convpack.c gives haste_conv_pack_b, which every variant's haste_sgemm_columns references (conv products only).
    subprocess.run(["clang", "-shared", "-pthread", "-o", lib, driver, *objs, conv, *flags], check=True)
    return lib


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0, help="per shape")
    ap.add_argument("--shape", action="append", help='"m n k transA transB" (repeatable)')
    ap.add_argument("--variant", action="append", default=[], help="NAME=path/to/sgemm.c (repeatable)")
    ap.add_argument("--split", choices=["auto", "rows", "columns"], default="auto",
                    help="how haste's sides split a product between the threads (auto: as AVX512Sgemm.run does "
                         "for more than 512 rows: rows where n <= 2m, else columns)")
    args = ap.parse_args()
    shapes = [list(map(int, s.split())) for s in (args.shape or ["1024 3072 768 0 1", "1024 768 3072 0 1",
                                                                 "1024 2304 768 0 0", "768 2304 1024 1 0",
                                                                 "1024 384 1536 0 1"])]
    for s in shapes:
        if len(s) != 5 or min(s[:3]) <= 0 or s[3] not in (0, 1) or s[4] not in (0, 1):
            sys.exit(f"bench_gemm_paired: --shape {s}: give m n k transA transB (positive sizes, transposes 0 or 1)")
    variants = [("haste", os.path.join(ROOT, "Sources/CKernels/sgemm.c"))]
    for v in args.variant:
        name, _, path = v.partition("=")
        if not name or not os.path.isfile(path):
            sys.exit(f"bench_gemm_paired: --variant {v}: give NAME=path to a modified copy of sgemm.c")
        variants.append((name, path))
    import torch
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lib = ctypes.CDLL(build(variants, tmp))
        P, L, I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
        lib.run.argtypes = [I, I, L, L, L, I, I, P, P, P, L, I]
        nc = 4032
        print(f"threads {args.threads}, torch {torch.__version__}, {os.uname().machine}; "
              "median/best GFLOP/s (median over calls of haste's time / this side's time)")
        for m, n, k, ta, tb in shapes:
            rows = int(args.split == "rows" or (args.split == "auto" and m > 512 and n <= 2 * m))
            a = torch.randn(k, m) if ta else torch.randn(m, k)
            b = torch.randn(n, k) if tb else torch.randn(k, n)
            A, B = (a.t() if ta else a), (b.t() if tb else b)
            c = torch.empty(m, n)
            ref = A @ B
            names = ["torch"] + [v[0] for v in variants]
            times = {x: [] for x in names}

            def call(x):
                if x == "torch":
                    torch.mm(A, B, out=c)
                else:
                    lib.run([v[0] for v in variants].index(x), args.threads, m, n, k, ta, tb,
                            a.data_ptr(), b.data_ptr(), c.data_ptr(), nc, rows)

            for x in names:
                call(x)
                if x != "torch" and not torch.allclose(c, ref, rtol=1e-3, atol=1e-3):
                    sys.exit(f"bench_gemm_paired: {x} gives a wrong product for {m}x{n}x{k} {ta}{tb}")
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                order = names[:]
                random.shuffle(order)
                for x in order:
                    time.sleep(0.004)
                    t = time.perf_counter()
                    call(x)
                    times[x].append(time.perf_counter() - t)
            f = 2 * m * n * k / 1e9
            base = times["haste"]
            cols = [f"{x} {f / statistics.median(times[x]):.0f}/{f / min(times[x]):.0f} "
                    f"({statistics.median([u / v for u, v in zip(base, times[x])]):.3f})" for x in names]
            print(f"{m}x{n}x{k} {ta}{tb} {'rows' if rows else 'cols'} calls={len(base)}: " + "  ".join(cols))


if __name__ == "__main__":
    main()
