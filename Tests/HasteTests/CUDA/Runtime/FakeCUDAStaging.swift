/// The stand-in libcuda's pinned memory and events without timing (appended to `fakeDriverSource`), for
/// `PinnedUploads`. cuMemHostAlloc's blocks are remembered. A host → device copy from the block `fake_defer_from`
/// points into is queued, not run, like a GPU's: the queue runs in order up to an event's mark when the event is
/// waited for (cuEventSynchronize), and all of it before any later stream work (a launch, another copy) or a
/// synchronize, as stream order requires; cuEventQuery says whether the copies before the event have run. So a
/// staging byte written again before its copy ran shows up as a wrong value on the "device".
let fakeStagingSource = #"""
int fake_fail_host_alloc = 0, fake_host_allocs = 0, fake_host_frees = 0, fake_event_waits = 0, fake_deferred_peak = 0;
unsigned fake_host_alloc_flags = 0;
const char* fake_defer_from = 0;
size_t fake_defer_bytes = 0;
#define FAKE_QUEUE 4096
static struct { uint64_t dst; const char* src; size_t n; } fake_queue[FAKE_QUEUE];
static long fake_queued = 0, fake_ran = 0;
static long fake_event_mark[1 << 16];
CUresult cuMemHostAlloc(void** p, size_t n, unsigned flags) {
    if (fake_fail_host_alloc) return 2;
    fake_host_allocs++; fake_host_alloc_flags = flags;
    *p = malloc(n);
    return 0;
}
CUresult cuMemFreeHost(void* p) { fake_host_frees++; free(p); return 0; }
static void fake_run(long upto) {
    for (; fake_ran < upto; fake_ran++) {
        long i = fake_ran % FAKE_QUEUE;
        memcpy((void*)(uintptr_t)fake_queue[i].dst, fake_queue[i].src, fake_queue[i].n);
    }
}
static void fake_run_all(void) { fake_run(fake_queued); }
static int fake_defer(uint64_t dst, const void* src, size_t n) {
    const char* c = (const char*)src;
    if (!fake_defer_from || c < fake_defer_from || c >= fake_defer_from + fake_defer_bytes) return 0;
    if (fake_queued - fake_ran == FAKE_QUEUE) fake_run(fake_ran + 1);
    long i = fake_queued % FAKE_QUEUE;
    fake_queue[i].dst = dst; fake_queue[i].src = c; fake_queue[i].n = n;
    fake_queued++;
    if (fake_queued - fake_ran > fake_deferred_peak) fake_deferred_peak = (int)(fake_queued - fake_ran);
    return 1;
}
static void fake_note_event(void* e, int timing) { fake_event_mark[((uintptr_t)e - 0xe0000) & 0xffff] = fake_queued; }
CUresult cuEventQuery(void* e) { return fake_ran >= fake_event_mark[((uintptr_t)e - 0xe0000) & 0xffff] ? 0 : 600; }
CUresult cuEventSynchronize(void* e) { fake_event_waits++; fake_run(fake_event_mark[((uintptr_t)e - 0xe0000) & 0xffff]); return 0; }
"""#
