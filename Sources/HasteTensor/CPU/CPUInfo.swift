import Foundation

/// What /proc/cpuinfo says about this CPU (Linux; empty elsewhere): `haste doctor` prints it and `CPUPeak`
/// derives the paper FMA peak from it. Parsed from the text, so tests can give any machine's file.
public struct CPUInfo: Sendable, Equatable {
    public struct Processor: Sendable, Equatable {
        /// "physical id" and "core id"; nil where the kernel does not report them (some VMs, non-x86).
        public var physicalID: String?, coreID: String?
    }

    public var model: String?
    public var vendor: String?
    public var family: Int?
    public var flags: Set<String> = []
    /// "cpu MHz" of the first processor: the current clock, not the maximum.
    public var mhz: Double?
    public var processors: [Processor] = []

    /// The blocks of /proc/cpuinfo (one per logical processor, separated by blank lines), `key : value` lines.
    public init(cpuinfo text: String) {
        for block in text.components(separatedBy: "\n\n") {
            var fields: [String: String] = [:]
            for line in block.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { continue }
                let key = parts[0].trimmingCharacters(in: .whitespaces)
                if fields[key] == nil { fields[key] = parts[1].trimmingCharacters(in: .whitespaces) }
            }
            guard fields["processor"] != nil else { continue }
            processors.append(Processor(physicalID: fields["physical id"], coreID: fields["core id"]))
            guard processors.count == 1 else { continue }
            model = fields["model name"]
            vendor = fields["vendor_id"]
            family = fields["cpu family"].flatMap { Int($0) }
            flags = Set((fields["flags"] ?? "").split(separator: " ").map(String.init))
            mhz = fields["cpu MHz"].flatMap { Double($0) }
        }
    }

    /// This machine's /proc/cpuinfo (no processors where the file does not exist).
    public static func current() -> CPUInfo {
        CPUInfo(cpuinfo: (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
    }

    /// Physical cores: distinct (physical id, core id) pairs; nil when the ids are missing.
    public var physicalCores: Int? {
        let ids = processors.compactMap { p in p.physicalID.flatMap { a in p.coreID.map { "\(a):\($0)" } } }
        return ids.count == processors.count && !ids.isEmpty ? Set(ids).count : nil
    }

    /// The SIMD flags haste's kernels care about, in this order, with whether the CPU has each.
    public var simdFlags: [(name: String, present: Bool)] {
        ["avx2", "fma", "avx512f"].map { ($0, flags.contains($0)) }
    }
}
