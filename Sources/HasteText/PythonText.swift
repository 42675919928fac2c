import Foundation

/// Python's string semantics where the CLIP text pipeline depends on them: Python strings are sequences of code
/// points, so haste's text cleaning works on `[Unicode.Scalar]` (Swift `String` compares by canonical
/// equivalence, which would end ftfy's fix-until-stable loops early).
enum PythonText {
    /// `str.isspace()` and `re`'s `\s` on str patterns: bidirectional class WS, B or S, or category Zs.
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }

    /// `re.sub(r"\s+", " ", text).strip()` (Hugging Face's `whitespace_clean`).
    static func whitespaceClean(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        var pendingSpace = false
        for c in text {
            if isSpace(c) {
                pendingSpace = true
            } else {
                if pendingSpace && !out.isEmpty { out.append(" ") }
                pendingSpace = false
                out.append(c)
            }
        }
        return out
    }

    /// `str.lower()`: each code point's full lower-case mapping (SpecialCasing's unconditional entries, so
    /// U+0130 becomes "i̇"), and capital sigma becomes final sigma in the Final_Sigma context. Swift's tables are
    /// Unicode 16.0, Python 3.11's 14.0: the 55 code points that gained a lower case since differ.
    static func lower(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        for (i, c) in text.enumerated() {
            let v = c.value
            if v < 0x80 {
                out.append(v >= 0x41 && v <= 0x5A ? Unicode.Scalar(v + 32)! : c)
            } else if v == 0x3A3 {
                out.append(isFinalSigma(text, at: i) ? "\u{3C2}" : "\u{3C3}")
            } else if c.properties.changesWhenLowercased {
                out.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// CPython's `handle_capital_sigma`: \p{cased}\p{case-ignorable}* Σ !(\p{case-ignorable}* \p{cased}).
    private static func isFinalSigma(_ text: [Unicode.Scalar], at i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && text[j].properties.isCaseIgnorable { j -= 1 }
        guard j >= 0 && text[j].properties.isCased else { return false }
        j = i + 1
        while j < text.count && text[j].properties.isCaseIgnorable { j += 1 }
        return j == text.count || !text[j].properties.isCased
    }

    /// Python's `str.strip()` / `lstrip()` / `rstrip()` over `isSpace`.
    static func strip(_ text: ArraySlice<Unicode.Scalar>, leading: Bool = true, trailing: Bool = true) -> ArraySlice<Unicode.Scalar> {
        var s = text
        while leading, let f = s.first, isSpace(f) { s.removeFirst() }
        while trailing, let l = s.last, isSpace(l) { s.removeLast() }
        return s
    }

    /// NFC normalisation (`unicodedata.normalize("NFC", text)`).
    static func nfc(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        if text.allSatisfy({ $0.value < 0x300 }) { return text }   // below U+0300 nothing composes or decomposes
        var s = String.UnicodeScalarView()
        s.append(contentsOf: text)
        return Array(String(s).precomposedStringWithCanonicalMapping.unicodeScalars)
    }
}
