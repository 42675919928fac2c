#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import Testing
import HasteTensor
@testable import HasteCUDA

/// What the emulator found wrong: a bad launch, a pointer outside every live allocation, a deadlock, a compile error.
struct EmulatorError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// A CUDA device on the host, for the tests (Tests/HasteTests/CUDA/Emulator): `GPUDriver` with device memory in
/// host memory (`DevicePointer` = address bits), kernels compiled by clang++ with the C++ runtime of
/// `EmulatorRuntime` and run block by block at launch, GEMMs as plain loops (cuBLAS semantics).
///
/// Checks what a GPU would only get wrong silently or crash on: every pointer argument of a launch, and both ends of
/// every copy and GEMM operand, lie inside a live allocation (null pointer arguments are allowed: CUDA code passes
/// them for absent optional inputs), pointers are aligned for their element type, argument kinds match the
/// kernel's C parameter types, launch dimensions are within the device's limits, every thread reaches every
/// barrier at the same call site, no two blocks write one byte without an atomic. New memory (and shared memory at
/// every block start) is filled with 0xFF bytes (NaN as float or bf16, -1 as int) so reads of memory no kernel
/// wrote show up; a guard page after every allocation turns an access past its end into a fault, which ends the
/// launch (not the process) with the kernel, block, thread and source line, as do the undefined-behaviour traps
/// kernels are compiled with (EmulatorCompiler.flags).
///
/// A problem is recorded as an issue of the running test (`recordsIssues`, the shared test device) or kept and
/// thrown by the next `synchronize()` (the emulator's own tests): `CUDABackend.synchronize` ends the process on a
/// thrown error, which must not happen inside the test runner.
final class EmulatedDriver: GPUDriver {
    let deviceDescription = "emulated CUDA device (host)"
    let computeCapability = 90
    var maxSharedBytes: Int { Self.maxSharedBytes }
    /// TF32 for float32 products (the TF32 flash forward; the emulated GEMMs stay float32): per task, as the
    /// device is shared by tests running in parallel (`EmulatedDriver.$allowsTF32.withValue(true) { … }`).
    @TaskLocal static var allowsTF32 = false
    var allowTF32: Bool { Self.allowsTF32 }
    let totalMemory: Int
    let recordsIssues: Bool

    /// One emulator activity at a time in the process: the compiled runtimes keep the launch in globals.
    static let lock = NSRecursiveLock()

    struct Allocation { let base: UInt64; let size: Int; let mapping: UnsafeMutableRawPointer; let mappingSize: Int }
    /// Live allocations by base address, and their bases in ascending order.
    private var allocations: [UInt64: Allocation] = [:]
    private var bases: [UInt64] = []
    /// Bytes allocated and not freed.
    private(set) var allocatedBytes = 0
    private var pendingError: EmulatorError?
    /// Kernels launched so far (for tests of the emulator itself).
    private(set) var launches = 0
    /// Where the calling task counts its GEMMs with bf16 operands (GemmStridedBatchedEx): per task, because tests run
    /// in parallel on this one emulator and a process-wide count would include other tests' GEMMs.
    @TaskLocal static var bf16GemmTally: BF16GemmTally?
    /// The calling task's epilogue GEMMs (`gemm(_:epilogue:)`), per task as `bf16GemmTally`.
    @TaskLocal static var biasGemmTally: BiasGemmTally?
    /// Where the calling task gives `timed` a time (per task as `bf16GemmTally`): the summed cost of the kernels
    /// launched; unset, `timed` gives nil as the protocol's default (the emulator cannot time).
    @TaskLocal static var launchClock: LaunchClock?

    /// A made-up GPU time for `LaunchTuner`'s tests: each launch costs `cost(kernel name)` ms; the names launched are kept.
    final class LaunchClock: @unchecked Sendable {
        let cost: (String) -> Double
        private(set) var ms = 0.0
        private(set) var names: [String] = []
        init(cost: @escaping (String) -> Double) { self.cost = cost }
        func add(_ name: String) { ms += cost(name); names.append(name) }
    }

    func timed(_ body: () -> Void) -> Double? {
        guard let clock = EmulatedDriver.launchClock else { body(); return nil }
        let before = clock.ms
        body()
        return clock.ms - before
    }

    /// The bf16 GEMMs `body` runs on the emulator (its own task's only), with its result.
    static func countingBF16Gemms<R>(_ body: () throws -> R) rethrows -> (result: R, bf16Gemms: Int) {
        let tally = BF16GemmTally()
        let result = try $bf16GemmTally.withValue(tally) { try body() }
        return (result, tally.count)
    }

    /// Compiler flags beyond `EmulatorCompiler.flags` (`-DHASTE_EMU_UCONTEXT` tests the portable fiber switch).
    let extraFlags: [String]

    /// Threads of even-numbered blocks (blockIdx.x + .y + .z even) start in reverse index order, the others in
    /// index order, so a kernel right in only one order (a shared value read without a barrier after the thread
    /// that writes it) fails; race-free kernels give the same results (float atomics aside: their order changes).
    let alternatesThreadOrder: Bool
    /// After every block, the allocations a launch's pointer arguments lie in are compared with their state before
    /// it: a byte changed by two blocks, or after another block read it, not through an atomic, is a race. Skipped
    /// for launches where that would compare more than `raceCheckBudget` bytes in all.
    let checksBlockRaces: Bool
    static let raceCheckBudget = 1 << 30
    /// Accesses of two threads to a byte of shared memory or of those allocations that no barrier orders, cp.async
    /// bytes touched early and (with `checksBlockRaces`) reads of what an earlier block changed (not through
    /// haste_ldcg) are races, whatever order threads and blocks ran in (EmulatorRuntime+SharedRaces.swift,
    /// +GlobalRaces.swift, EmulatedDriver+SharedRaces.swift). Off with HASTE_EMULATOR_SHARED_RACES=0.
    let checksSharedRaces: Bool
    static let checksSharedRacesByDefault = ProcessInfo.processInfo.environment["HASTE_EMULATOR_SHARED_RACES"] != "0"

    init(totalMemory: Int = 16 << 30, recordsIssues: Bool = true, extraFlags: [String] = [],
         alternatesThreadOrder: Bool = true, checksBlockRaces: Bool = true,
         checksSharedRaces: Bool = EmulatedDriver.checksSharedRacesByDefault) {
        self.totalMemory = totalMemory
        self.recordsIssues = recordsIssues
        self.extraFlags = extraFlags
        self.alternatesThreadOrder = alternatesThreadOrder
        self.checksBlockRaces = checksBlockRaces
        self.checksSharedRaces = checksSharedRaces
    }

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    func report(_ message: String) {
        if recordsIssues {
            Issue.record(Comment(rawValue: "CUDA emulator: " + message))
        } else if pendingError == nil {
            pendingError = EmulatorError(message: message)
        }
    }

    // MARK: memory

    func allocate(byteCount: Int) -> DevicePointer? {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        let bytes = Swift.max(byteCount, 1)
        guard allocatedBytes + bytes <= totalMemory else { return nil }
        let page = EmulatedDriver.pageSize
        let usable = (bytes + page - 1) / page * page
        let used = (bytes + 255) / 256 * 256
        let mappingSize = usable + page
        guard let mapping = mmap(nil, mappingSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              mapping != MAP_FAILED, mprotect(mapping + usable, page, PROT_NONE) == 0 else {
            // Not the device's out-of-memory (the caller would say so): the host refused a mapping.
            fputs("CUDA emulator: mmap of \(mappingSize) bytes failed: \(String(cString: strerror(errno)))\n", stderr)
            return nil
        }
        // The block ends where the guard page begins (256-byte aligned start, as cuMemAlloc's).
        let start = mapping + usable - used
        memset(start, 0xFF, used)
        let base = DevicePointer(UInt(bitPattern: start))
        allocations[base] = Allocation(base: base, size: bytes, mapping: mapping, mappingSize: mappingSize)
        bases.insert(base, at: insertionIndex(base))
        allocatedBytes += bytes
        return base
    }

    func free(_ address: DevicePointer) {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        guard let a = allocations.removeValue(forKey: address) else {
            report("free(0x\(String(address, radix: 16))): not the start of a live allocation (freed twice?)")
            return
        }
        bases.remove(at: insertionIndex(address))
        allocatedBytes -= a.size
        munmap(a.mapping, a.mappingSize)
    }

    /// Index of the first base ≥ `address`.
    private func insertionIndex(_ address: UInt64) -> Int {
        var lo = 0, hi = bases.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if bases[mid] < address { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The live allocation holding `[address, address + byteCount)`, or nil.
    func allocation(containing address: UInt64, byteCount: Int) -> Allocation? {
        var i = insertionIndex(address)
        if i == bases.count || bases[i] != address { i -= 1 }
        guard i >= 0, let a = allocations[bases[i]] else { return nil }
        let end = a.base + UInt64(a.size)
        return address >= a.base && address <= end && UInt64(byteCount) <= end - address ? a : nil
    }

    /// Why `[address, address + byteCount)` is not device memory, or nil when it is.
    func rangeProblem(_ address: UInt64, _ byteCount: Int) -> String? {
        if allocation(containing: address, byteCount: byteCount) != nil { return nil }
        let hex = "0x" + String(address, radix: 16)
        if let a = allocation(containing: address, byteCount: 0) {
            return "\(hex) + \(byteCount) bytes runs past the end of its allocation (\(a.size) bytes at 0x\(String(a.base, radix: 16)), "
                + "\(Int(address - a.base)) bytes in)"
        }
        return "\(hex) is not inside any live device allocation (a host pointer, or memory already freed?)"
    }

    /// A host buffer must not be device memory (on a GPU that address means nothing to the host).
    private func hostProblem(_ host: UnsafeRawPointer) -> String? {
        let address = UInt64(UInt(bitPattern: host))
        guard let a = allocation(containing: address, byteCount: 0) else { return nil }
        return "0x\(String(address, radix: 16)) is device memory (the allocation of \(a.size) bytes at 0x\(String(a.base, radix: 16))), "
            + "not a host buffer"
    }

    // MARK: copies

    func copy(fromHost host: UnsafeRawPointer, to dst: DevicePointer, byteCount: Int) {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        guard byteCount > 0 else { return }
        if let p = rangeProblem(dst, byteCount) { return report("copy host → device: destination \(p)") }
        if let p = hostProblem(host) { return report("copy host → device: source \(p)") }
        memcpy(UnsafeMutableRawPointer(bitPattern: UInt(dst))!, host, byteCount)
    }

    func copy(from src: DevicePointer, toHost host: UnsafeMutableRawPointer, byteCount: Int) {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        guard byteCount > 0 else { return }
        if let p = rangeProblem(src, byteCount) { return report("copy device → host: source \(p)") }
        if let p = hostProblem(host) { return report("copy device → host: destination \(p)") }
        memcpy(host, UnsafeRawPointer(bitPattern: UInt(src))!, byteCount)
    }

    func copy(from src: DevicePointer, to dst: DevicePointer, byteCount: Int) {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        guard byteCount > 0 else { return }
        if let p = rangeProblem(src, byteCount) { return report("copy device → device: source \(p)") }
        if let p = rangeProblem(dst, byteCount) { return report("copy device → device: destination \(p)") }
        if src < dst + UInt64(byteCount) && dst < src + UInt64(byteCount) && src != dst {
            return report("copy device → device: source and destination overlap (\(byteCount) bytes, 0x\(String(src, radix: 16)) → "
                          + "0x\(String(dst, radix: 16))): undefined for cuMemcpyDtoD")
        }
        memmove(UnsafeMutableRawPointer(bitPattern: UInt(dst))!, UnsafeRawPointer(bitPattern: UInt(src))!, byteCount)
    }

    // MARK: kernels

    func load(_ source: KernelSource) throws -> [String: GPUFunction] {
        let module = try EmulatorCompiler.module(for: source, extraFlags: compilerFlags)
        var functions: [String: GPUFunction] = [:]
        for (name, kernel) in module.kernels {
            functions[name] = GPUFunction(name: name, handle: Unmanaged.passUnretained(kernel).toOpaque())
        }
        return functions
    }

    func launch(_ function: GPUFunction, grid: Dim3, block: Dim3, sharedBytes: Int, arguments: [KernelArgument]) {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        let kernel = Unmanaged<EmulatedKernel>.fromOpaque(function.handle).takeUnretainedValue()
        let name = kernel.name
        launches += 1
        EmulatedDriver.launchClock?.add(name)
        if let problem = EmulatedDriver.launchProblem(grid: grid, block: block, sharedBytes: sharedBytes) {
            return report("launch of \(name) with grid \(grid), block \(block), \(sharedBytes) shared bytes: \(problem)")
        }
        guard arguments.count == kernel.parameters.count else {
            return report("launch of \(name): \(arguments.count) arguments for \(kernel.parameters.count) parameters (\(kernel.signature))")
        }
        let slots = UnsafeMutableRawPointer.allocate(byteCount: 8 * Swift.max(arguments.count, 1), alignment: 8)
        let argv = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: Swift.max(arguments.count, 1))
        defer { slots.deallocate(); argv.deallocate() }
        for (i, (argument, parameter)) in zip(arguments, kernel.parameters).enumerated() {
            let slot = slots + 8 * i
            argv[i] = slot
            if let problem = argumentProblem(argument, parameter) {
                return report("launch of \(name): argument \(i) (\(parameter.description)): \(problem)")
            }
            switch argument {
            case let .pointer(p): slot.storeBytes(of: p, as: UInt64.self)
            case let .int32(v): slot.storeBytes(of: v, as: Int32.self)
            case let .int64(v): slot.storeBytes(of: v, as: Int64.self)
            case let .uint64(v): slot.storeBytes(of: v, as: UInt64.self)
            case let .float(v): slot.storeBytes(of: v, as: Float.self)
            case let .double(v): slot.storeBytes(of: v, as: Double.self)
            }
        }
        let shared = EmulatedDriver.sharedMemory(sharedBytes)
        var gridDims: [UInt32] = [UInt32(grid.x), UInt32(grid.y), UInt32(grid.z)]
        var blockDims: [UInt32] = [UInt32(block.x), UInt32(block.y), UInt32(block.z)]
        var message = [CChar](repeating: 0, count: 4096)
        var fault: [UInt64] = [0, 0, 0, 0]
        let (regions, betweenBlocks) = raceRegions(arguments, blocks: grid.x * grid.y * grid.z)
        let options: Int32 = (alternatesThreadOrder ? 1 : 0) | (betweenBlocks ? 2 : 0)   // haste_emu_run's
        let status = name.withCString { cName in
            kernel.run(kernel.trampoline, argv, cName, &gridDims, &blockDims, shared.assumingMemoryBound(to: CChar.self),
                       sharedBytes, options, regions, Int32(regions.count / 2), &message, message.count, &fault)
        }
        guard status != 0 else { return }
        var text = String(cString: message)
        if fault[0] == 1 { text += ": " + describe(fault[1], sharedBuffer: shared, sharedBytes: sharedBytes) }
        if fault[0] != 0, fault[3] != 0, let object = UnsafePointer<CChar>(bitPattern: UInt(fault[3])) {
            let path = String(cString: object)
            text = EmulatedDriver.symbolizingMarks(text, object: path)
            if let place = EmulatorCompiler.symbolize(object: path, offset: fault[2]) { text += "\n  at " + place }
        }
        report(text)
    }

    /// Where a faulting address lies: past the end of an allocation (its guard page), in freed or host memory.
    private func describe(_ address: UInt64, sharedBuffer: UnsafeMutableRawPointer, sharedBytes: Int) -> String {
        let i = insertionIndex(address + 1) - 1
        if i >= 0, let a = allocations[bases[i]], address >= a.base + UInt64(a.size),
           address < a.base + UInt64(a.size) + UInt64(EmulatedDriver.pageSize) {
            return "\(address - a.base - UInt64(a.size)) bytes past the end of the allocation of \(a.size) bytes at "
                + "0x\(String(a.base, radix: 16)) (an index out of range?)"
        }
        let shared = UInt64(UInt(bitPattern: sharedBuffer))
        if address >= shared + UInt64(sharedBytes), address < shared + UInt64(sharedBytes) + UInt64(EmulatedDriver.pageSize) + 256 {
            return "past the end of the launch's \(sharedBytes) bytes of dynamic shared memory"
        }
        if address < 4096 { return "a null pointer (plus \(address) bytes)" }
        return "not device memory (freed memory, or a host address computed by the kernel)"
    }

    /// The largest dynamic shared memory a launch may ask for (sm_90, with the opt-in attribute).
    static let maxSharedBytes = 227 * 1024
    /// One mapping for every launch's dynamic shared memory, followed by a guard page.
    nonisolated(unsafe) private static var sharedMapping: UnsafeMutableRawPointer?

    /// `bytes` of dynamic shared memory (256-byte aligned, poisoned) ending at a guard page (up to 255 bytes of slack).
    private static func sharedMemory(_ bytes: Int) -> UnsafeMutableRawPointer {
        let page = pageSize
        let usable = (maxSharedBytes + page - 1) / page * page
        if sharedMapping == nil {
            guard let m = mmap(nil, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), m != MAP_FAILED,
                  mprotect(m + usable, page, PROT_NONE) == 0 else {
                fatalError("CUDA emulator: cannot map shared memory: \(String(cString: strerror(errno)))")
            }
            sharedMapping = m
        }
        let used = (Swift.max(bytes, 1) + 255) / 256 * 256
        let start = sharedMapping! + usable - used
        memset(start, 0xFF, used)
        return start
    }

    /// CUDA's launch limits (sm_90: 1024 threads a block, 227 KiB of shared memory with the opt-in attribute).
    static func launchProblem(grid: Dim3, block: Dim3, sharedBytes: Int) -> String? {
        if [grid.x, grid.y, grid.z, block.x, block.y, block.z].contains(where: { $0 < 1 }) { return "every dimension must be ≥ 1" }
        if grid.x > Int(Int32.max) || grid.y > 65_535 || grid.z > 65_535 { return "grid beyond (2³¹-1, 65535, 65535)" }
        if block.x > 1024 || block.y > 1024 || block.z > 64 || block.x * block.y * block.z > 1024 {
            return "block beyond 1024 threads (x, y ≤ 1024, z ≤ 64)"
        }
        if sharedBytes < 0 || sharedBytes > maxSharedBytes { return "dynamic shared memory beyond 227 KiB" }
        return nil
    }

    private func argumentProblem(_ argument: KernelArgument, _ parameter: EmulatedKernel.Parameter) -> String? {
        switch (argument, parameter) {
        case let (.pointer(p), .pointer(alignment)):
            if p == 0 { return nil }
            if let problem = rangeProblem(p, 0) { return problem }
            if p % UInt64(alignment) != 0 {
                return "0x\(String(p, radix: 16)) is not aligned to \(alignment) bytes (a misaligned access faults on a GPU)"
            }
            return nil
        case (.int32, .int32), (.int32, .uint32), (.int64, .int64), (.uint64, .uint64), (.float, .float), (.double, .double):
            return nil
        default:
            return "passed as \(argument) (KernelArgument must match the C parameter type: "
                + "pointer → .pointer, int/unsigned → .int32, long long/i64 → .int64, u64 → .uint64, float → .float, double → .double)"
        }
    }

    func synchronize() throws {
        EmulatedDriver.lock.lock(); defer { EmulatedDriver.lock.unlock() }
        if let e = pendingError {
            pendingError = nil
            throw e
        }
    }

    /// The host address of device memory (tests of the emulator read and write it directly).
    func hostPointer(_ address: DevicePointer) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: UInt(address))! }
}

/// A task's count of epilogue GEMMs (`EmulatedDriver.biasGemmTally`: all, and per `GemmEpilogue.label`), or
/// (`refuses`) a driver without them, or without those of some labels (`refusedLabels`).
final class BiasGemmTally: @unchecked Sendable {
    var count = 0
    var labels: [String: Int] = [:]
    let refuses: Bool
    let refusedLabels: Set<String>
    init(refuses: Bool = false, refusedLabels: Set<String> = []) { self.refuses = refuses; self.refusedLabels = refusedLabels }
}

/// A task's count of bf16 GEMMs (`EmulatedDriver.countingBF16Gemms`); emulator calls run on the caller's thread.
final class BF16GemmTally: @unchecked Sendable {
    var count = 0
}
