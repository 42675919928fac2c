import HasteTensor

/// The values one numeric config key accepts (issue #14). Every numeric key of `TrainConfig` and of
/// `TeacherTrainingConfig` has one and is checked at load, flags and `--set` included, so a zero interval,
/// a negative rate or a NaN stops at start-up with the key, the range and the value instead of dividing by
/// zero or trapping in AdamW/EMA hours later.
package struct ConfigRange: Sendable {
    package enum Bound: Sendable {
        case atLeast(Double)              // [a, ∞)
        case above(Double)                // (a, ∞)
        case closed(Double, Double)       // [a, b]
        case halfOpen(Double, Double)     // [a, b)
    }
    package let bound: Bound
    /// Why, appended to the message when the reason is not obvious from the range.
    package let why: String

    package static func atLeast(_ a: Double, _ why: String = "") -> ConfigRange { ConfigRange(bound: .atLeast(a), why: why) }
    package static func above(_ a: Double, _ why: String = "") -> ConfigRange { ConfigRange(bound: .above(a), why: why) }
    package static func closed(_ a: Double, _ b: Double, _ why: String = "") -> ConfigRange { ConfigRange(bound: .closed(a, b), why: why) }
    package static func halfOpen(_ a: Double, _ b: Double, _ why: String = "") -> ConfigRange { ConfigRange(bound: .halfOpen(a, b), why: why) }

    package func contains(_ v: Double) -> Bool {
        guard v.isFinite else { return false }
        switch bound {
        case let .atLeast(a): return v >= a
        case let .above(a): return v > a
        case let .closed(a, b): return v >= a && v <= b
        case let .halfOpen(a, b): return v >= a && v < b
        }
    }

    /// "≥ 1", "> 0", "in [0, 1]", "in [0, 1)".
    package var text: String {
        func n(_ v: Double) -> String { v == v.rounded() && Swift.abs(v) < 1e15 ? "\(Int(v))" : "\(v)" }
        switch bound {
        case let .atLeast(a): return "≥ \(n(a))"
        case let .above(a): return "> \(n(a))"
        case let .closed(a, b): return "in [\(n(a)), \(n(b))]"
        case let .halfOpen(a, b): return "in [\(n(a)), \(n(b)))"
        }
    }

    /// Checks an `Int`, `Double`, `UInt64` or each element of an `[Int]`; throws `HasteError.config` naming `key`.
    /// Values of other types (strings, booleans, enums) are not numeric and pass.
    func check(_ key: String, _ value: Any) throws {
        switch value {
        case let i as Int: try check(key, Double(i), shown: "\(i)")
        case let u as UInt64: try check(key, Double(u), shown: "\(u)")
        case let d as Double: try check(key, d, shown: "\(d)")
        case let a as [Int]: for i in a { try check(key, Double(i), shown: "\(i) in \(a)") }
        default: return
        }
    }

    private func check(_ key: String, _ v: Double, shown: String) throws {
        if let detail = violation(v, shown: shown) { throw HasteError.config(key: key, detail: detail) }
    }

    /// "must be ≥ 1 (got -2); why" when `v` is outside the range (NaN and ±Inf always are), else nil: the one
    /// wording of config keys and of flags (the CLI's FlagCheck).
    package func violation(_ v: Double, shown: String? = nil) -> String? {
        guard !contains(v) else { return nil }
        let finite = v.isFinite ? "" : "a finite number "
        let value = shown ?? (v == v.rounded() && Swift.abs(v) < 1e15 ? "\(Int(v))" : "\(v)")
        return "must be \(finite)\(text) (got \(value))\(why.isEmpty ? "" : "; " + why)"
    }

    /// Whether `value` is one of the numeric types `check` reads.
    static func isNumeric(_ value: Any) -> Bool { value is Int || value is Double || value is UInt64 || value is [Int] }
}
