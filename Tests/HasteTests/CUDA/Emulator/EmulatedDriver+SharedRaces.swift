import HasteCUDA

/// The race check (`EmulatedDriver.checksSharedRaces`, EmulatorRuntime+SharedRaces.swift): how kernels are
/// compiled for it, and the places it names.
extension EmulatedDriver {
    /// ThreadSanitizer's instrumentation of every load and store, calling the runtime's own `__tsan_*` hooks
    /// (atomics, function entries and memcpy/memset are not instrumented: the runtime's atomics check their bytes
    /// themselves; no TSan runtime is linked). No sibling calls: a kernel ending in an atomic would jump to it, and
    /// the atomic's return address (its place in a report) would lie outside the kernel.
    static let sharedRaceFlags = ["-DHASTE_EMU_SHARED_RACES", "-fsanitize=thread", "-mllvm", "-tsan-instrument-atomics=0",
                                  "-mllvm", "-tsan-instrument-func-entry-exit=0", "-mllvm", "-tsan-instrument-memintrinsics=0",
                                  "-fno-optimize-sibling-calls"]

    /// The flags every family is compiled with: `extraFlags`, and the race check's when it is on (the runtime is
    /// never instrumented, only the kernels' own loads and stores).
    var compilerFlags: [String] { extraFlags + (checksSharedRaces ? EmulatedDriver.sharedRaceFlags : []) }

    /// `text` with each "{pc 0x…}" (an offset into `object`, from the shared-memory race check) replaced by its place.
    static func symbolizingMarks(_ text: String, object: String) -> String {
        var out = "", rest = Substring(text)
        while let open = rest.range(of: "{pc 0x"), let close = rest[open.upperBound...].firstIndex(of: "}") {
            out += rest[..<open.lowerBound]
            let hex = rest[open.upperBound..<close]
            out += UInt64(hex, radix: 16).flatMap { EmulatorCompiler.symbolize(object: object, offset: $0) } ?? "0x" + hex
            rest = rest[rest.index(after: close)...]
        }
        return out + rest
    }

    /// (address, bytes) of every allocation a pointer argument lies in, for the race checks in device memory, and
    /// whether to check between blocks (not for a single block, nor where comparing the allocations after every
    /// block would cost more than `raceCheckBudget`); no regions where neither check would read them.
    func raceRegions(_ arguments: [KernelArgument], blocks: Int) -> ([UInt64], betweenBlocks: Bool) {
        guard checksSharedRaces || (checksBlockRaces && blocks > 1) else { return ([], false) }
        var seen = Set<UInt64>(), regions: [UInt64] = [], bytes = 0
        for case let .pointer(p) in arguments where p != 0 {
            guard let a = allocation(containing: p, byteCount: 0), seen.insert(a.base).inserted else { continue }
            regions += [a.base, UInt64(a.size)]
            bytes += a.size
        }
        let (compared, overflow) = bytes.multipliedReportingOverflow(by: blocks)
        let betweenBlocks = checksBlockRaces && blocks > 1 && !overflow && compared <= EmulatedDriver.raceCheckBudget
        return (checksSharedRaces || betweenBlocks ? regions : [], betweenBlocks)
    }
}
