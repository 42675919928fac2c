import ArgumentParser
import Foundation
import HasteTraining

/// Range and choice checks for flags that do not go through `TrainConfig` (generate, train-teacher), worded
/// like the config's (issue #18): the flag, the rule, the value, and why. Numeric options that may be given a
/// negative number use `parsing: .unconditional`, so `--cfg-scale -2` reaches these checks instead of
/// ArgumentParser's "Missing value".
enum FlagCheck {
    /// Throws "--flag must be ≥ 1 (got -2); why" unless `range` holds `value` (NaN and ±Inf never do).
    static func range(_ flag: String, _ value: Double, _ range: ConfigRange) throws {
        if let v = range.violation(value) { throw ValidationError("--\(flag) \(v)") }
    }

    static func range<I: BinaryInteger>(_ flag: String, _ value: I, _ range: ConfigRange) throws {
        if let v = range.violation(Double(value), shown: "\(value)") { throw ValidationError("--\(flag) \(v)") }
    }

    /// Throws "unknown value 'x' for --flag; allowed: a, b" unless `value` is one of `allowed` (or of `aliases`).
    static func choice(_ flag: String, _ value: String, _ allowed: [String], aliases: [String] = []) throws {
        guard !allowed.contains(value) && !aliases.contains(value) else { return }
        throw ValidationError("unknown value '\(value)' for --\(flag); allowed: \(allowed.joined(separator: ", "))")
    }

    /// A one-line note on stderr: a flag accepted for the reference's sake that has no effect here, and why.
    static func note(_ line: String) {
        FileHandle.standardError.write(Data("haste: note: \(line)\n".utf8))
    }
}
