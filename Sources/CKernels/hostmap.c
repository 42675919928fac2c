// Anonymous memory for HostBlockCache (Sources/HasteTensor/CPU/HostBlockCache.swift). In C because mremap is
// variadic (Swift imports no variadic C function) and MAP_FAILED is a macro; errno is returned with the failure.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <sys/mman.h>
#include "CKernels.h"

void *haste_map(size_t byte_count, int *error) {
    void *p = mmap(NULL, byte_count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { *error = errno; return NULL; }
    *error = 0;
    return p;
}

int haste_unmap(void *address, size_t byte_count) {
    return munmap(address, byte_count) == 0 ? 0 : errno;
}

void *haste_remap(void *address, size_t old_byte_count, size_t new_byte_count) {
#if defined(__linux__)
    void *p = mremap(address, old_byte_count, new_byte_count, MREMAP_MAYMOVE);
    return p == MAP_FAILED ? NULL : p;
#else
    (void)address; (void)old_byte_count; (void)new_byte_count;
    return NULL;   /* no mremap: the caller unmaps and maps instead */
#endif
}
