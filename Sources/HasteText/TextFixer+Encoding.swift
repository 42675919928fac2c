/// ftfy's mojibake repair (`fix_encoding`, `_fix_encoding_one_step_and_explain`, and the byte fixes it calls).
extension TextFixer {
    static let badness = SequencePattern(alternatives: FTFYTables.badness)
    static let alteredUTF8 = SequencePattern(alternatives: FTFYTables.alteredUTF8)
    static let lossyUTF8 = SequencePattern(alternatives: FTFYTables.lossyUTF8)
    static let utf8Detector = SequencePattern(alternatives: FTFYTables.utf8Detector)
    static let utf8DetectorLookbehind = SequencePattern(alternatives: [FTFYTables.utf8DetectorLookbehind])

    static func isBad(_ t: [UInt32]) -> Bool { badness.search(t) }

    /// `fix_encoding`: one step at a time until nothing changes.
    static func fixEncoding(_ text: [UInt32]) -> [UInt32] {
        var t = text
        while true {
            let next = fixEncodingStep(t)
            if next == t { return t }
            t = next
        }
    }

    static func fixEncodingStep(_ t: [UInt32]) -> [UInt32] {
        if t.isEmpty || t.allSatisfy({ $0 < 0x80 }) || !isBad(t) { return t }
        var latin1Possible = false
        for page in Codepage.all where page.canEncode(t) {
            if page.name == "latin-1" { latin1Possible = true }
            var bytes = page.encodeText(t)
            if !(FTFYTables.restoreByteA0SkipsMacroman && page.name == "macroman") && alteredUTF8.search(bytes) { bytes = restoreByteA0(bytes) }
            if page.name.hasPrefix("sloppy") { bytes = lossyUTF8.sub(bytes) { _ in [0xEF, 0xBF, 0xBD] } }
            if let fixed = decodeUTF8Variants(bytes) { return fixed }
        }
        let inconsistent = decodeInconsistentUTF8(t)
        if inconsistent != t { return inconsistent }
        if latin1Possible {
            // ftfy checks for "windows-1252" among the possible encodings, which only lists "sloppy-windows-1252":
            // the Latin-1 → windows-1252 re-decoding is always tried.
            let decoded = t.map { Codepage.windows1252[Int($0)] }   // U+FFFD: an undefined byte, a decode error
            if !decoded.contains(0xFFFD) && decoded != t { return decoded }
        }
        if t.contains(where: { (0x80...0x9F).contains($0) }) { return fixC1Controls(t) }
        return t
    }

    /// `restore_byte_a0`: "Ã " (C3 20) not before " ", "quele", "quela", "quilo" or "s " becomes "à " (C3 A0 20);
    /// then in every ALTERED_UTF8_RE match, spaces become A0.
    static func restoreByteA0(_ b: [UInt32]) -> [UInt32] {
        var out: [UInt32] = []
        var i = 0
        let exceptions: [[UInt32]] = [" ", "quele", "quela", "quilo", "s "].map { $0.unicodeScalars.map(\.value) }
        while i < b.count {
            if b[i] == 0xC3 && i + 1 < b.count && b[i + 1] == 0x20
                && !exceptions.contains(where: { e in i + 2 + e.count <= b.count && Array(b[(i + 2)..<(i + 2 + e.count)]) == e }) {
                out += [0xC3, 0xA0, 0x20]; i += 2; continue
            }
            out.append(b[i]); i += 1
        }
        return alteredUTF8.sub(out) { m in m.map { $0 == 0x20 ? 0xA0 : $0 } }
    }

    /// `decode_inconsistent_utf8`: each UTF8_DETECTOR_RE match shorter than the text that looks bad is fixed alone.
    static func decodeInconsistentUTF8(_ t: [UInt32]) -> [UInt32] {
        var out: [UInt32] = []
        var i = 0
        while i < t.count {
            if i == 0 || utf8DetectorLookbehind.match(t, at: i - 1) == nil {
                var end = i
                while let next = utf8Detector.match(t, at: end) { end = next }
                if end > i {
                    let sub = Array(t[i..<end])
                    out += sub.count < t.count && isBad(sub) ? fixEncoding(sub) : sub
                    i = end; continue
                }
            }
            out.append(t[i]); i += 1
        }
        return out
    }
}
