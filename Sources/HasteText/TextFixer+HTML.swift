/// ftfy's `unescape_html`: every `&#?[0-9A-Za-z]{1,24};` that names an HTML5 entity (or its upper-cased form,
/// for the entities ftfy allows) becomes its text; numeric references as `html.unescape` decodes them, kept
/// as they are when the result would contain ";".
extension TextFixer {
    static let entities: [String: [UInt32]] = parseCodePointTable(FTFYTables.htmlEntities)
    static let invalidCharrefs: [UInt32: [UInt32]] = {
        Dictionary(uniqueKeysWithValues: parseCodePointTable(FTFYTables.invalidCharrefs).map { (UInt32($0.key, radix: 16)!, $0.value) })
    }()
    static let invalidCodepoints = CodePointSet(FTFYTables.invalidCodepoints)

    static func unescapeEntities(_ t: [UInt32]) -> [UInt32] {
        guard t.contains(0x26) else { return t }
        var out: [UInt32] = []
        var i = 0
        while i < t.count {
            if t[i] == 0x26, let (end, replacement) = entity(t, i) {
                out += replacement; i = end; continue
            }
            out.append(t[i]); i += 1
        }
        return out
    }

    private static func isAlnum(_ v: UInt32) -> Bool {
        (0x30...0x39).contains(v) || (0x41...0x5A).contains(v) || (0x61...0x7A).contains(v)
    }

    /// The match at `i` (an "&") and its replacement.
    private static func entity(_ t: [UInt32], _ i: Int) -> (Int, [UInt32])? {
        let numeric = i + 1 < t.count && t[i + 1] == 0x23
        let first = i + (numeric ? 2 : 1)
        var j = first
        while j < t.count && isAlnum(t[j]) { j += 1 }
        guard j > first, j - first <= 24, j < t.count, t[j] == 0x3B else { return nil }
        let body = String(String.UnicodeScalarView(t[first..<j].map { Unicode.Scalar($0)! }))
        if !numeric {
            return (j + 1, entities[body] ?? Array(t[i...j]))
        }
        guard let value = numericReference(body) else { return (j + 1, Array(t[i...j])) }
        return (j + 1, value.contains(0x3B) ? Array(t[i...j]) : value)
    }

    /// `html._replace_charref` for "#digits;" or "#xhex;"; nil where `html.unescape` would not consume the ";".
    private static func numericReference(_ body: String) -> [UInt32]? {
        let hex = body.first == "x" || body.first == "X"
        let digits = hex ? body.dropFirst() : Substring(body)
        guard !digits.isEmpty, digits.allSatisfy({ hex ? $0.isHexDigit : ("0"..."9").contains($0) }) else { return nil }
        let trimmed = digits.drop { $0 == "0" }
        guard trimmed.count <= 8, let n = UInt32(trimmed.isEmpty ? "0" : String(trimmed), radix: hex ? 16 : 10) else {
            return [0xFFFD]   // beyond U+10FFFF
        }
        if let r = invalidCharrefs[n] { return r }
        if (0xD800...0xDFFF).contains(n) || n > 0x10FFFF { return [0xFFFD] }
        if invalidCodepoints.contains(n) { return [] }
        return [n]
    }
}
