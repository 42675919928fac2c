// Anonymous memory for HostBlockCache (Sources/HasteTensor/CPU/HostBlockCache.swift). In C because mremap is
// variadic (Swift imports no variadic C function) and MAP_FAILED is a macro; errno is returned with the failure.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include "CKernels.h"

/* The transparent huge page size (2 MiB on x86-64), or 0 where the kernel has none; read once. */
static size_t huge_page_size(void) {
    static size_t cached = (size_t)-1;
    size_t known = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (known != (size_t)-1) return known;
    size_t size = 0;
#if defined(__linux__)
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r");
    if (f) {
        unsigned long long v = 0;
        if (fscanf(f, "%llu", &v) == 1 && v >= 4096 && v <= (64ull << 20) && (v & (v - 1)) == 0) size = (size_t)v;
        fclose(f);
    }
#endif
    __atomic_store_n(&cached, size, __ATOMIC_RELAXED);
    return size;
}

size_t haste_huge_page_size(void) { return huge_page_size(); }

static void *plain_map(size_t byte_count, int *error) {
    void *p = mmap(NULL, byte_count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { *error = errno; return NULL; }
    *error = 0;
    return p;
}

/* Blocks of a huge page and more start on a huge-page boundary (mapped one huge page longer, the ends cut off)
 * and are marked MADV_HUGEPAGE, as torch's THP_MEM_ALLOC_ENABLE does for its CPU allocations: their first touch
 * then faults and zeroes 2 MiB at a time instead of 4 KiB, and their GEMM panels and element-wise passes take a
 * TLB entry per 2 MiB. Where THP is "never" the advice is ignored; where it is "always" only the alignment adds
 * (whole huge pages from the block's first byte). A refused madvise (a kernel without THP) leaves an ordinary
 * mapping; a refused longer mapping (strict overcommit) an unaligned one. */
void *haste_map(size_t byte_count, int *error) {
    size_t huge = huge_page_size();
    if (huge == 0 || byte_count < huge) return plain_map(byte_count, error);
    char *start, *raw = mmap(NULL, byte_count + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        if (!(start = plain_map(byte_count, error))) return NULL;
    } else {
        start = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
        size_t head = (size_t)(start - raw), tail = huge - head;
        if (head) munmap(raw, head);
        if (tail) munmap(start + byte_count, tail);
    }
#if defined(MADV_HUGEPAGE)
    (void)madvise(start, byte_count, MADV_HUGEPAGE);
#endif
    *error = 0;
    return start;
}

int haste_unmap(void *address, size_t byte_count) {
    return munmap(address, byte_count) == 0 ? 0 : errno;
}

void *haste_remap(void *address, size_t old_byte_count, size_t new_byte_count) {
#if defined(__linux__)
    void *p = mremap(address, old_byte_count, new_byte_count, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) return NULL;
    /* A block grown past a huge page gets the advice haste_map gives such blocks (a moved one may lose the
     * alignment: its whole huge pages still get them). */
#if defined(MADV_HUGEPAGE)
    size_t huge = huge_page_size();
    if (huge && new_byte_count >= huge && old_byte_count < huge) (void)madvise(p, new_byte_count, MADV_HUGEPAGE);
#endif
    return p;
#else
    (void)address; (void)old_byte_count; (void)new_byte_count;
    return NULL;   /* no mremap: the caller unmaps and maps instead */
#endif
}
