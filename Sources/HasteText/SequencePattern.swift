/// ftfy's regular expressions are alternations of fixed sequences of character classes (the generator checks
/// this); `SequencePattern` runs them with Python `re` semantics: at each position the alternatives are tried in
/// order and the first that matches wins; `sub` replaces leftmost non-overlapping matches. Text is code points
/// (or bytes, for ftfy's bytes patterns).
struct SequencePattern {
    enum Element {
        case set(Int), optional(Int), space, optionalSpace, word, any, start
    }

    /// The compiled `FTFYTables.sets`.
    static let sets: [CodePointSet] = FTFYTables.sets.map(CodePointSet.init)

    let alternatives: [[Element]]

    /// The end of the first alternative that matches at `i`, or nil.
    func match(_ t: [UInt32], at i: Int) -> Int? {
        for alternative in alternatives {
            if let end = SequencePattern.match(alternative, t, i) { return end }
        }
        return nil
    }

    func search(_ t: [UInt32]) -> Bool {
        for i in 0..<max(t.count, 1) where match(t, at: i) != nil { return true }
        return false
    }

    /// `re.sub(pattern, replacement, t)`.
    func sub(_ t: [UInt32], _ replacement: (ArraySlice<UInt32>) -> [UInt32]) -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(t.count)
        var i = 0
        while i < t.count {
            if let end = match(t, at: i), end > i {
                out += replacement(t[i..<end]); i = end
            } else {
                out.append(t[i]); i += 1
            }
        }
        return out
    }

    static func match(_ elements: [Element], _ t: [UInt32], _ start: Int) -> Int? {
        var i = start
        for e in elements {
            switch e {
            case .start:
                if i != 0 { return nil }
            case .set(let k):
                guard i < t.count, sets[k].contains(t[i]) else { return nil }
                i += 1
            case .optional(let k):
                if i < t.count && sets[k].contains(t[i]) { i += 1 }
            case .space:
                guard i < t.count, PythonText.isSpace(Unicode.Scalar(t[i]) ?? "\u{0}") else { return nil }
                i += 1
            case .optionalSpace:
                if i < t.count && PythonText.isSpace(Unicode.Scalar(t[i]) ?? "\u{0}") { i += 1 }
            case .word:
                guard i < t.count, isWord(t[i]) else { return nil }
                i += 1
            case .any:
                guard i < t.count, t[i] != 0x0A else { return nil }
                i += 1
            }
        }
        return i
    }

    /// Python `re`'s `\w` on str: `str.isalnum()` (a letter or a code point with a numeric value) or `_`.
    static func isWord(_ v: UInt32) -> Bool {
        guard let c = Unicode.Scalar(v) else { return false }
        return v == 0x5F || PreTokenizer.isLetter(c) || c.properties.numericType != nil
    }
}

/// A set of code points from "41,61-7A" (hex, comma-separated; a leading ^ negates).
struct CodePointSet {
    let ranges: [ClosedRange<UInt32>]
    let negated: Bool

    init(_ text: String) {
        negated = text.hasPrefix("^")
        ranges = text.dropFirst(negated ? 1 : 0).split(separator: ",").map { part in
            let ends = part.split(separator: "-").map { UInt32($0, radix: 16)! }
            return ends[0]...ends[ends.count - 1]
        }
    }

    func contains(_ v: UInt32) -> Bool {
        ranges.contains { $0.contains(v) } != negated
    }

    /// The listed code points (not negated sets).
    var members: Set<UInt32> { Set(ranges.flatMap { Array($0) }) }
}

/// Parses "hex:hex.hex hex:hex ..." tables (keys → code point sequences).
func parseCodePointTable(_ text: String) -> [String: [UInt32]] {
    var table: [String: [UInt32]] = [:]
    for entry in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
        let kv = entry.split(separator: ":", maxSplits: 1)
        table[String(kv[0])] = kv.count > 1 ? kv[1].split(separator: ".").map { UInt32($0, radix: 16)! } : []
    }
    return table
}
