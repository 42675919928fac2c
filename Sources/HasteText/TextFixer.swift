/// ftfy 6.1.1's `fix_text` with its default configuration, as Hugging Face's `CLIPTokenizer` calls it: per line,
/// until nothing changes: HTML entities (only while no line so far contained "<"), mojibake (`fixEncoding`),
/// C1 controls, Latin ligatures, full-width characters, curly quotes, line breaks, terminal escapes, control
/// characters, NFC. Not ported: `fix_surrogates` (a Swift string cannot hold a lone surrogate).
enum TextFixer {
    static let maxDecodeLength = 1_000_000

    static func fixText(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        if text.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7F && $0 != "&" && $0 != "\u{1B}" }) { return text }
        var t = text.map(\.value)
        var out: [UInt32] = []
        var unescape = true, pos = 0
        while pos < t.count {
            var end = (t[pos...].firstIndex(of: 0x0A) ?? (t.count - 1)) + 1
            if end - pos > maxDecodeLength { end = pos + maxDecodeLength }
            let segment = Array(t[pos..<end])
            if segment.contains(0x3C) { unescape = false }
            out += fixSegment(segment, unescapeHTML: unescape)
            pos = end
        }
        t = out
        return t.map { Unicode.Scalar($0)! }
    }

    /// `fix_and_explain`.
    static func fixSegment(_ text: [UInt32], unescapeHTML: Bool) -> [UInt32] {
        var t = text
        while true {
            let original = t
            if unescapeHTML { t = unescapeEntities(t) }
            t = fixEncoding(t)
            t = fixC1Controls(t)
            t = t.flatMap { ligatures[$0] ?? [$0] }
            t = t.flatMap { widthMap[$0] ?? [$0] }
            t = t.map { v in
                v == 0x2BC || (0x2018...0x201B).contains(v) ? 0x27 : (0x201C...0x201F).contains(v) ? 0x22 : v
            }
            t = fixLineBreaks(t)
            t = removeTerminalEscapes(t)
            t = t.filter { !controlCharacters.contains($0) }
            t = PythonText.nfc(t.map { Unicode.Scalar($0)! }).map(\.value)
            if t == original { return t }
        }
    }

    static let ligatures: [UInt32: [UInt32]] = {
        let pairs: [(UInt32, String)] = [
            (0x132, "IJ"), (0x133, "ij"), (0x149, "\u{2BC}n"), (0x1F1, "DZ"), (0x1F2, "Dz"), (0x1F3, "dz"),
            (0x1C4, "D\u{17D}"), (0x1C5, "D\u{17E}"), (0x1C6, "d\u{17E}"), (0x1C7, "LJ"), (0x1C8, "Lj"), (0x1C9, "lj"),
            (0x1CA, "NJ"), (0x1CB, "Nj"), (0x1CC, "nj"), (0xFB00, "ff"), (0xFB01, "fi"), (0xFB02, "fl"),
            (0xFB03, "ffi"), (0xFB04, "ffl"), (0xFB05, "\u{17F}t"), (0xFB06, "st")]
        return Dictionary(uniqueKeysWithValues: pairs.map { ($0.0, $0.1.unicodeScalars.map(\.value)) })
    }()

    static let widthMap: [UInt32: [UInt32]] = {
        Dictionary(uniqueKeysWithValues: parseCodePointTable(FTFYTables.widthMap).map { (UInt32($0.key, radix: 16)!, $0.value) })
    }()

    static let controlCharacters = CodePointSet(FTFYTables.controlCharacters).members

    static func fixLineBreaks(_ t: [UInt32]) -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(t.count)
        var i = 0
        while i < t.count {
            let v = t[i]
            if v == 0x0D && i + 1 < t.count && t[i + 1] == 0x0A {
                out.append(0x0A); i += 2; continue
            }
            out.append(v == 0x0D || v == 0x2028 || v == 0x2029 || v == 0x85 ? 0x0A : v)
            i += 1
        }
        return out
    }

    /// `ANSI_RE = "\033\[((?:\d|;)*)([a-zA-Z])"` removed (`\d` is any decimal digit, Python's str semantics).
    static func removeTerminalEscapes(_ t: [UInt32]) -> [UInt32] {
        guard t.contains(0x1B) else { return t }
        var out: [UInt32] = []
        var i = 0
        while i < t.count {
            if t[i] == 0x1B && i + 1 < t.count && t[i + 1] == 0x5B {
                var j = i + 2
                while j < t.count && (t[j] == 0x3B || Unicode.Scalar(t[j])!.properties.generalCategory == .decimalNumber) { j += 1 }
                if j < t.count && ((0x41...0x5A).contains(t[j]) || (0x61...0x7A).contains(t[j])) {
                    i = j + 1; continue
                }
            }
            out.append(t[i]); i += 1
        }
        return out
    }

    /// `fix_c1_controls`: U+0080...U+009F decoded as their sloppy-windows-1252 byte.
    static func fixC1Controls(_ t: [UInt32]) -> [UInt32] {
        t.map { (0x80...0x9F).contains($0) ? Codepage.sloppy1252.decode[Int($0)] : $0 }
    }
}
