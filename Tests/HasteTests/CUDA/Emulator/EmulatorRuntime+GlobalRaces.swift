extension EmulatorRuntime {
    /// The race check in device memory (`EmulatedDriver.checksSharedRaces` for the accesses, `checksBlockRaces` for
    /// the launch's allocations): accesses of two threads of a block no barrier orders, and between blocks reads
    /// of what an earlier block changed and changes of what an earlier block read.
    static let globalRaces = #"""
// ---- races in device memory ----
// The memory a launch can reach: the allocations its pointer arguments lie in (`regions` of haste_emu_run). Between
// blocks (launches of more than one block within the driver's budget: g_between_blocks) each byte keeps a copy of
// its value before the launch and the last block that changed it (check_block_writes, EmulatorRuntime+Launch.swift)
// and, with the race check's instrumentation, the block(s) that read it. Inside a block (the instrumentation alone)
// each byte a block touches keeps shared memory's entry (SharedByte: the last write, the reads of the current
// barrier generation), in 1 KiB pages made on a block's first touch: two threads' accesses no __syncthreads()
// (or, for lanes of a warp, __syncwarp()) orders, one a write, are a race on a GPU, where the fibers' one order
// here may give the right values (a `+=` by many threads of a block gives the right sum here).
namespace haste_emu {
struct Blocks { int writer, reader; };          // a byte's last changing block, its reading block(s) (-2: several)
struct Region { unsigned char* base; size_t size; unsigned char* shadow; Blocks* blocks; };
static Region* g_regions;
static int g_region_count;

// "block (x, y, z)" for a block's linear index, "other blocks" for -2 (several), into `buffer`.
static const char* block_name(int b, char* buffer, size_t capacity) {
    if (b < 0) snprintf(buffer, capacity, "other blocks");
    else snprintf(buffer, capacity, "block (%u, %u, %u)", b % g_gridDim.x, b / g_gridDim.x % g_gridDim.y,
                  b / (g_gridDim.x * g_gridDim.y));
    return buffer;
}

#ifdef HASTE_EMU_SHARED_RACES
#pragma clang attribute push (__attribute__((no_sanitize("thread"))), apply_to = function)   // the check's own code
static const size_t kGlobalPageBytes = 1024;
struct GlobalPage { uintptr_t page; SharedByte* bytes; };   // page: address / kGlobalPageBytes, 0 = empty slot
static GlobalPage* g_page_table;               // open addressing, emptied at each block's start
static size_t g_page_capacity;                 // a power of two, at least twice the pages in use
static size_t* g_page_slots;                   // the table's slots in use this block
static SharedByte** g_page_pool;               // entries of pages, reused from block to block (the block serial)
static size_t g_pool_count, g_pool_used;
static int g_page_shift;                       // 64 - log2(g_page_capacity): the hash's top bits pick the slot
static uintptr_t g_last_page;                  // the page global_page returned last, and its entries
static SharedByte* g_last_bytes;
static int g_last_region;                      // the region region_of found last

static void global_pages_block() {
    for (size_t i = 0; i < g_pool_used; i++) g_page_table[g_page_slots[i]].page = 0;
    g_pool_used = 0;
    g_last_page = 0;
}

// A launch starts with a small table (the pool's pages stay), so each launch's growth is its own.
static void global_pages_launch() {
    free(g_page_table); free(g_page_slots);
    g_page_table = nullptr; g_page_slots = nullptr;
    g_page_capacity = 0; g_pool_used = 0; g_last_page = 0;
}

static inline size_t page_slot(uintptr_t page) { return (size_t)((page * 0x9E3779B97F4A7C15ull) >> g_page_shift); }

static void global_page_insert(uintptr_t page, SharedByte* bytes, size_t* slot_out) {
    size_t i = page_slot(page);
    while (g_page_table[i].page != 0) i = (i + 1) & (g_page_capacity - 1);
    g_page_table[i] = GlobalPage{page, bytes};
    *slot_out = i;
}

// The entries of the page holding address a (made for this block on its first touch).
static SharedByte* global_page(uintptr_t a) {
    const uintptr_t page = a / kGlobalPageBytes;
    if (page == g_last_page) return g_last_bytes;
    if (g_page_capacity) {
        for (size_t i = page_slot(page);; i = (i + 1) & (g_page_capacity - 1)) {
            if (g_page_table[i].page == page) { g_last_page = page; return g_last_bytes = g_page_table[i].bytes; }
            if (g_page_table[i].page == 0) break;
        }
    }
    if (2 * (g_pool_used + 1) > g_page_capacity) {            // grow the table (and its list of slots in use)
        GlobalPage* old = g_page_table;
        size_t old_capacity = g_page_capacity;
        g_page_capacity = old_capacity ? 2 * old_capacity : 256;
        g_page_shift = 64 - __builtin_ctzll(g_page_capacity);
        g_page_table = (GlobalPage*)calloc(g_page_capacity, sizeof(GlobalPage));
        g_page_slots = (size_t*)realloc(g_page_slots, sizeof(size_t) * g_page_capacity / 2);
        size_t used = 0;
        for (size_t i = 0; i < old_capacity; i++)
            if (old[i].page) global_page_insert(old[i].page, old[i].bytes, &g_page_slots[used++]);
        free(old);
    }
    if (g_pool_used == g_pool_count) {
        g_page_pool = (SharedByte**)realloc(g_page_pool, sizeof(SharedByte*) * (g_pool_count + 1));
        g_page_pool[g_pool_count++] = (SharedByte*)calloc(kGlobalPageBytes, sizeof(SharedByte));   // block 0: untouched
    }
    SharedByte* bytes = g_page_pool[g_pool_used];
    global_page_insert(page, bytes, &g_page_slots[g_pool_used]);
    g_pool_used++;
    g_last_page = page;
    return g_last_bytes = bytes;
}

// Between blocks, a read: of a byte an earlier block of this launch changed, a race (blocks run one after another
// here, concurrently and in any order on a GPU); else the byte's readers noted for check_block_writes. The one
// hand-over kernels may make (a count by atomic, a fence, the reads through haste_ldcg: the dq last-block sum)
// reads through haste_emu_ldcg, unchecked.
static void between_blocks_read(Region& g, size_t off, size_t size, uintptr_t pc) {
    for (size_t i = 0; i < size && off + i < g.size; i++) {
        Blocks& o = g.blocks[off + i];
        const int w = o.writer, a = atomic_block((uintptr_t)(g.base + off + i));
        if ((w >= 0 && w != g_block_index) || (a >= 0 && a != g_block_index)) {
            const int b = w >= 0 && w != g_block_index ? w : a;
            char who[48];
            g_race_pc = pc;
            abort_thread("a race between blocks: this thread reads byte %zu of the %zu-byte allocation at %p, which %s "
                         "changed earlier in this launch%s (blocks run concurrently and in any order on a GPU: hand results "
                         "over by an atomic count, a fence and haste_ldcg)", off + i, g.size, (void*)g.base,
                         block_name(b, who, sizeof who), b == w ? "" : " by an atomic");
        }
        if (o.reader == -1) o.reader = g_block_index;
        else if (o.reader != g_block_index) o.reader = -2;   // several blocks read it
    }
}

// The hand-over's fences: the threads of the running block with device-memory writes no haste_threadfence() of
// theirs has followed yet (g_unfenced, g_unfenced_count), and per block of the launch the place of an atomic it made
// while one of its threads had such writes (g_release_pc; 0: none). Another block reading those writes through
// haste_ldcg after that atomic's count may see stale values on a GPU (handover_read).
static bool g_unfenced[1024];
static int g_unfenced_count;
static uintptr_t* g_release_pc;
static size_t g_release_capacity;

static void fences_launch(size_t blocks) {
    if (blocks > g_release_capacity) {
        free(g_release_pc);
        g_release_pc = (uintptr_t*)calloc(blocks, sizeof(uintptr_t));
        g_release_capacity = g_release_pc ? blocks : 0;
    } else if (g_release_pc) memset(g_release_pc, 0, blocks * sizeof(uintptr_t));
}
static void fences_block() { memset(g_unfenced, 0, sizeof g_unfenced); g_unfenced_count = 0; }
static void fence_thread() {
    const int t = g_current_thread;
    if (t >= 0 && g_unfenced[t]) { g_unfenced[t] = false; g_unfenced_count--; }
}

// The region address a lies in (and its offset there), or null; the last one found is tried first.
static Region* region_of(uintptr_t a, size_t* off) {
    for (int k = 0; k < g_region_count; k++) {
        const int r = (g_last_region + k) % g_region_count;
        *off = (size_t)(a - (uintptr_t)g_regions[r].base);
        if (*off < g_regions[r].size) { g_last_region = r; return &g_regions[r]; }
    }
    return nullptr;
}

static void handover_read(const void* p, size_t bytes, uintptr_t pc) {
    if (g_current_thread < 0 || !g_between_blocks) return;
    size_t off;
    Region* g = region_of((uintptr_t)p, &off);
    for (size_t i = 0; g && i < bytes && off + i < g->size; i++) {
        const int w = g->blocks[off + i].writer;
        if (w < 0 || w == g_block_index || (size_t)w >= g_release_capacity || !g_release_pc[w]) continue;
        char place[64], who[48];
        g_race_pc = pc;
        abort_thread("a hand-over without a fence: this thread reads through haste_ldcg byte %zu of the %zu-byte "
                     "allocation at %p, which %s wrote and then released by the atomic at %s before a "
                     "haste_threadfence() of the writing thread ordered the write (on a GPU the count may be seen before "
                     "the write: a stale value)", off + i, g->size, (void*)g->base, block_name(w, who, sizeof who),
                     pc_mark(g_release_pc[w], place, sizeof place));
    }
}

// Between blocks, an atomic on region g's bytes off…: a change of a byte another block read earlier in this launch
// is a race (that read may come before or after it on a GPU), as for a plain change (check_block_writes); made while
// a thread of the block has unfenced writes, it releases them unordered (g_release_pc).
static void between_blocks_atomic(Region& g, size_t off, size_t size, uintptr_t pc) {
    if (g_unfenced_count > 0 && (size_t)g_block_index < g_release_capacity && !g_release_pc[g_block_index])
        g_release_pc[g_block_index] = pc;
    for (size_t i = 0; i < size && off + i < g.size; i++) {
        const int reader = g.blocks[off + i].reader;
        if (reader == -1 || reader == g_block_index) continue;
        char who[48];
        g_race_pc = pc;
        abort_thread("a race between blocks: this thread changes by an atomic byte %zu of the %zu-byte allocation at %p, "
                     "which %s read earlier in this launch (blocks run concurrently and in any order on a GPU: the read "
                     "may see either value)", off + i, g.size, (void*)g.base, block_name(reader, who, sizeof who));
    }
}

static void global_access(uintptr_t a, size_t size, bool write, uintptr_t pc, bool atomic) {
    size_t off;
    Region* r = region_of(a, &off);
    if (!r) return;
    Region& g = *r;
    if (g_between_blocks) {
        if (atomic) between_blocks_atomic(g, off, size, pc);
        else if (!write) between_blocks_read(g, off, size, pc);
        else if (!g_unfenced[g_current_thread]) { g_unfenced[g_current_thread] = true; g_unfenced_count++; }
    }
    while (size > 0) {                             // page by page
        size_t in_page = kGlobalPageBytes - a % kGlobalPageBytes, n = size < in_page ? size : in_page;
        check_bytes(global_page(a) + a % kGlobalPageBytes, n, write, pc, nullptr, off, g.base, g.size, atomic);
        a += n; off += n; size -= n;
    }
}
#pragma clang attribute pop
#endif
} // namespace haste_emu

"""#
}
