/// CLIP's pre-tokenisation: `regex.findall` of
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` with IGNORECASE
/// (the `regex` module), written out by hand. At each position the alternatives are tried in that order and the
/// first that matches wins; code points no alternative matches (whitespace) are skipped. Two consequences of
/// IGNORECASE, checked against the `regex` module over all of Unicode: U+017F (long s) matches `s`, and U+0345
/// (combining ypogegrammeni, which case-folds to a letter) leaves the punctuation class, so nothing matches it
/// and it is dropped. Categories come from Swift's Unicode tables (16.0): code points assigned only in later
/// versions (the `regex` module of 2026 knows Unicode 17) are unassigned here and fall in the punctuation class.
enum PreTokenizer {
    enum Piece: Equatable {
        case special(Int32)
        case text(Range<Int>)
    }

    static func split(_ t: [Unicode.Scalar]) -> [Piece] {
        var pieces: [Piece] = []
        var i = 0
        while i < t.count {
            if let (id, end) = special(t, i) {
                // Hugging Face's BPE cache holds the two exact strings: a case-folded match ("<|ſtartoftext|>")
                // is one pre-token merged like any other.
                let exact = specials.contains { $0.text == Array(t[i..<end]) }
                pieces.append(exact ? .special(id) : .text(i..<end)); i = end; continue
            }
            if let end = contraction(t, i) {
                pieces.append(.text(i..<end)); i = end; continue
            }
            let c = t[i]
            if isLetter(c) {
                var j = i + 1
                while j < t.count && isLetter(t[j]) { j += 1 }
                pieces.append(.text(i..<j)); i = j
            } else if isNumber(c) {
                pieces.append(.text(i..<(i + 1))); i += 1
            } else if isOther(c) {
                var j = i + 1
                while j < t.count && isOther(t[j]) { j += 1 }
                pieces.append(.text(i..<j)); i = j
            } else {
                i += 1
            }
        }
        return pieces
    }

    private static let specials: [(text: [Unicode.Scalar], id: Int32)] = [
        (Array("<|startoftext|>".unicodeScalars), 49406), (Array("<|endoftext|>".unicodeScalars), 49407)]
    private static let contractions: [[Unicode.Scalar]] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }

    /// Case-insensitive equality of a text code point with a pattern one (ASCII letters and `<|>'`), as the
    /// `regex` module's simple case folding has it.
    private static func matches(_ c: Unicode.Scalar, _ p: Unicode.Scalar) -> Bool {
        if c == p { return true }
        let v = c.value, pv = p.value
        if pv >= 0x61 && pv <= 0x7A && v == pv - 32 { return true }
        return pv == 0x73 && v == 0x17F
    }

    private static func hasPrefix(_ t: [Unicode.Scalar], _ i: Int, _ p: [Unicode.Scalar]) -> Bool {
        guard t.count - i >= p.count else { return false }
        for k in 0..<p.count where !matches(t[i + k], p[k]) { return false }
        return true
    }

    private static func special(_ t: [Unicode.Scalar], _ i: Int) -> (Int32, Int)? {
        guard t[i] == "<" else { return nil }
        for s in specials where hasPrefix(t, i, s.text) { return (s.id, i + s.text.count) }
        return nil
    }

    private static func contraction(_ t: [Unicode.Scalar], _ i: Int) -> Int? {
        guard t[i] == "'" else { return nil }
        for c in contractions where hasPrefix(t, i, c) { return i + c.count }
        return nil
    }

    static func isLetter(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 { return (v | 0x20) >= 0x61 && (v | 0x20) <= 0x7A }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func isNumber(_ c: Unicode.Scalar) -> Bool {
        let v = c.value
        if v < 0x80 { return v >= 0x30 && v <= 0x39 }
        switch c.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// `[^\s\p{L}\p{N}]` under IGNORECASE; `\s` is the White_Space property.
    static func isOther(_ c: Unicode.Scalar) -> Bool {
        if c.value == 0x345 { return false }
        return !c.properties.isWhitespace && !isLetter(c) && !isNumber(c)
    }
}
