import COpenBLAS

/// The reference backend: host memory, OpenBLAS GEMMs and plain Swift loops (STYLE §0.3).
public final class CPUBackend: Backend {
    public static let shared = CPUBackend()
    public let name = "cpu"

    /// Tensor storage of 128 KiB and more: a mapping per block, cached by size within the most live bytes seen
    /// plus 40 MiB (HostBlockCache). 40, not 64: SiT-B/2 bs4's peak RSS 2927 → 2891 MiB (PyTorch's: 2925–2977
    /// across runs), with no more blocks mapped per step there or in the DINOv2-B forward; SiT-S/2 bs4 +align maps
    /// 14 per step instead of 10 (32 MiB: 18, and 2 in the DINOv2 forward). `haste bench train --json`, 2 threads,
    /// Zen 4. It used to live on glibc's heap (mmap threshold raised to 1 GiB) because
    /// glibc's own mmap/munmap per block page-faulted the whole working set again every step (measured: 40% of a
    /// demo step in the kernel); but then the RSS was the heap's high-water mark, not the live bytes (SiT-B/2 bs1:
    /// 3192 MiB RSS for a 2175 MiB tensor peak; DINOv2-B forward bs16: 1380–1476 MiB, run to run, for 737). As
    /// cached mappings: 2282 and 870 MiB (`haste bench train --json`, 2 threads). A cached mapping is reused
    /// without faults and fragments nothing. 128 KiB is glibc's default mmap threshold: smaller blocks (at most 3% lost to page rounding
    /// above it) stay on malloc. The slack grows (slackGrowth 8: up to 1/8 of the live peak) where a step keeps
    /// evicting sizes it asks for again: SiT-S/2 bs16 +align faulted 325 MiB a step in 20 maps and 24 resizes at a
    /// fixed 40 MiB; the slack settles at 392 MiB and the steps after the second map nothing (RSS 3230 → 3481 MiB,
    /// PyTorch's 4156; step −1.1%, 8 interleaved pairs of `--reps 3` and `--reps 6`); SiT-B/2 bs4 +align, which evicts nothing a step, 3533 → 3576
    /// MiB (its first step's evictions).
    let blocks = HostBlockCache(mapper: SystemHostMapper(), threshold: 128 << 10, slack: 40 << 20, slackGrowth: 8)

    /// What stays on the heap (small tensors, kernels' scratch, Swift arrays, the data pipeline's batches) still
    /// benefits from glibc never returning it: with a 1 GiB trim threshold a VAE encode returned and re-faulted
    /// ~2.8 GB per batch (700 K minor faults; 16.2 → 12.8 s per batch of 8 at 256² once off), and the raised mmap
    /// threshold keeps large non-tensor buffers (image batches, staging copies) from an mmap/munmap per use.
    private init() {
        _ = mallopt(M_MMAP_THRESHOLD, 1 << 30)
        _ = mallopt(M_TRIM_THRESHOLD, -1)
    }

    /// Hands the pages of freed heap blocks back to the OS (glibc `malloc_trim(0)`: every whole free page inside
    /// the heap is MADV_DONTNEED'ed, the top released). With trimming off, what a one-off phase freed on the heap
    /// stays resident. Before tensor storage moved to HostBlockCache, building a model (each weight's initial values
    /// drawn through float64 temporaries) left ~2.5× the parameter bytes of freed heap behind, and this call alone
    /// took SiT-B/2 bs1 from 3171 to 2284 MiB RSS (tensor peak 2175). Now those temporaries are cached mappings
    /// bounded by HostBlockCache; what the call still returns is the heap's share: tensors under 128 KiB, Swift
    /// arrays and kernel scratch of the build. Measured with the allocator in (release, 2 threads, one run each,
    /// with / without the call): SiT-B/2 bs1 2273 / 2273 MiB, DINOv2-B forward bs16 850 / 870 MiB. Small, and
    /// one trim per built model costs nothing measurable. `ParameterStore.finalize` calls it once a model is built.
    public static func releaseFreeMemory() { _ = malloc_trim(0) }

    /// Sets OpenBLAS's pool and our chunking together (STYLE §4.9).
    public static func setThreads(_ n: Int) {
        Parallel.threads = max(1, n)
        withGemmMutex { openblas_set_num_threads(Int32(max(1, n))) }
        OpenBLASSpin.configure()
    }

    public func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        blocks.serves(byteCount) ? blocks.allocate(byteCount)
            : UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
    }

    public func deallocate(_ address: UnsafeMutableRawPointer, byteCount: Int) {
        if blocks.serves(byteCount) { blocks.deallocate(address, byteCount: byteCount) } else { address.deallocate() }
    }

    public func copy(from src: Buffer, to dst: Buffer, byteCount: Int) {
        dst.rawPointer.copyMemory(from: src.rawPointer, byteCount: byteCount)
    }

    public func copyFromHost(_ host: UnsafeRawPointer, to dst: Buffer, byteCount: Int) {
        dst.rawPointer.copyMemory(from: host, byteCount: byteCount)
    }

    public func copyToHost(_ src: Buffer, _ host: UnsafeMutableRawPointer, byteCount: Int) {
        host.copyMemory(from: src.rawPointer, byteCount: byteCount)
    }

    /// Fixed chunks on the pool (a gradient's zero fill is megabytes).
    public func fill(_ dst: Buffer, count: Int, value: Double) {
        func run<T>(_ p: UnsafeMutablePointer<T>, _ v: T) {
            let base = SendablePointer(p)
            Parallel.chunks(count) { r in (base.base + r.lowerBound).update(repeating: v, count: r.count) }
        }
        switch dst.dtype {
        case .float32: run(dst.pointer(Float.self), Float(value))
        case .float64: run(dst.pointer(Double.self), value)
        case .float16: run(dst.pointer(UInt16.self), Float(value).halfBits)
        case .bfloat16: run(dst.pointer(UInt16.self), Float(value).bfloat16Bits)
        case .int32: run(dst.pointer(Int32.self), Int32(value))
        case .int64: run(dst.pointer(Int64.self), Int64(value))
        case .uint8: run(dst.pointer(UInt8.self), UInt8(value))
        case .bool: run(dst.pointer(Bool.self), value != 0)
        }
    }

    public func stridedCopy(from src: Buffer, srcStrides: [Int], to dst: Buffer, dstStrides: [Int], shape: [Int]) {
        switch src.dtype.byteSize {
        case 8: copyStrided(src.pointer(UInt64.self), srcStrides, dst.pointer(UInt64.self), dstStrides, shape)
        case 4: copyStrided(src.pointer(UInt32.self), srcStrides, dst.pointer(UInt32.self), dstStrides, shape)
        case 2: copyStrided(src.pointer(UInt16.self), srcStrides, dst.pointer(UInt16.self), dstStrides, shape)
        default: copyStrided(src.pointer(UInt8.self), srcStrides, dst.pointer(UInt8.self), dstStrides, shape)
        }
    }

    /// Row-major walk over `shape`; the innermost axis is a tight loop, rows run in parallel chunks.
    private func copyStrided<T>(_ src: UnsafeMutablePointer<T>, _ ss0: [Int], _ dst: UnsafeMutablePointer<T>,
                                _ ds0: [Int], _ shape0: [Int]) {
        let (shape, ss, ds) = CPUBackend.coalesce(shape0, ss0, ds0)
        let rank = shape.count
        let inner = shape[rank - 1], si = ss[rank - 1], di = ds[rank - 1]
        let rows = shape.dropLast().reduce(1, *)
        if rows * inner == 0 { return }
        let s = SendablePointer(src), d = SendablePointer(dst)
        Parallel.chunks(rows, chunk: max(1, Parallel.defaultChunk / inner)) { range in
            for row in range {
                var rem = row, so = 0, dof = 0
                for axis in stride(from: rank - 2, through: 0, by: -1) {
                    let c = rem % shape[axis]
                    rem /= shape[axis]
                    so += c * ss[axis]; dof += c * ds[axis]
                }
                let inp = s.base + so, out = d.base + dof
                if si == 1 && di == 1 {
                    out.update(from: inp, count: inner)
                } else {
                    for j in 0..<inner { out[j * di] = inp[j * si] }
                }
            }
        }
    }
}
