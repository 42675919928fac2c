/// A single-byte code page of ftfy's CHARMAP_ENCODINGS (Python's codec, or ftfy's "sloppy" variant that decodes
/// undefined bytes as the Latin-1 character and byte 0x1A as U+FFFD).
struct Codepage {
    let name: String
    /// Byte → code point.
    let decode: [UInt32]
    /// Code point → byte (the inverse of `decode`).
    let encode: [UInt32: UInt8]
    /// `chardata.possible_encoding`: ASCII except 0x1A, or a character some byte 0x80...0xFF (or 0x1A) decodes to.
    let possible: Set<UInt32>

    init(name: String, table: String) {
        self.name = name
        decode = table.split(separator: ",").map { UInt32($0, radix: 16)! }
        var encode: [UInt32: UInt8] = [:]
        for (b, c) in decode.enumerated() where encode[c] == nil { encode[c] = UInt8(b) }
        self.encode = encode
        possible = Set(decode[0x80...] + [decode[0x1A]])
    }

    func canEncode(_ t: [UInt32]) -> Bool {
        t.allSatisfy { ($0 < 0x80 && $0 != 0x1A) || possible.contains($0) }
    }

    /// `text.encode(name)`; call only when `canEncode(t)`.
    func encodeText(_ t: [UInt32]) -> [UInt32] {
        t.map { $0 < 0x80 ? $0 : UInt32(encode[$0]!) }
    }

    static let all: [Codepage] = zip(FTFYTables.codepageNames, FTFYTables.codepages).map { Codepage(name: $0, table: $1) }
    static let sloppy1252 = all[FTFYTables.codepageNames.firstIndex(of: "sloppy-windows-1252")!]
    /// Python's strict windows-1252: U+FFFD marks the five undefined bytes (decoding them fails).
    static let windows1252 = FTFYTables.windows1252.split(separator: ",").map { UInt32($0, radix: 16)! }
}

/// Python's UTF-8 decoding as ftfy's "utf-8-variants" does it: strict UTF-8, plus C0 80 as U+0000 and CESU-8
/// surrogate pairs (ED A0-AF xx ED B0-BF xx) as one supplementary character. nil where Python raises.
func decodeUTF8Variants(_ b: [UInt32]) -> [UInt32]? {
    var out: [UInt32] = []
    var i = 0
    func cont(_ k: Int) -> Bool { k < b.count && (0x80...0xBF).contains(b[k]) }
    while i < b.count {
        let c = b[i]
        if c < 0x80 { out.append(c); i += 1; continue }
        if c == 0xC0 && i + 1 < b.count && b[i + 1] == 0x80 { out.append(0); i += 2; continue }
        if c == 0xED && i + 5 < b.count && (0xA0...0xAF).contains(b[i + 1]) && cont(i + 2) && b[i + 3] == 0xED
            && (0xB0...0xBF).contains(b[i + 4]) && cont(i + 5) {
            out.append(((b[i + 1] & 0x0F) << 16) + ((b[i + 2] & 0x3F) << 10) + ((b[i + 4] & 0x0F) << 6) + (b[i + 5] & 0x3F) + 0x10000)
            i += 6; continue
        }
        switch c {
        case 0xC2...0xDF:
            guard cont(i + 1) else { return nil }
            out.append((c & 0x1F) << 6 | (b[i + 1] & 0x3F)); i += 2
        case 0xE0...0xEF:
            let lo: UInt32 = c == 0xE0 ? 0xA0 : 0x80, hi: UInt32 = c == 0xED ? 0x9F : 0xBF
            guard i + 1 < b.count, (lo...hi).contains(b[i + 1]), cont(i + 2) else { return nil }
            out.append((c & 0x0F) << 12 | (b[i + 1] & 0x3F) << 6 | (b[i + 2] & 0x3F)); i += 3
        case 0xF0...0xF4:
            let lo: UInt32 = c == 0xF0 ? 0x90 : 0x80, hi: UInt32 = c == 0xF4 ? 0x8F : 0xBF
            guard i + 1 < b.count, (lo...hi).contains(b[i + 1]), cont(i + 2), cont(i + 3) else { return nil }
            out.append((c & 0x07) << 18 | (b[i + 1] & 0x3F) << 12 | (b[i + 2] & 0x3F) << 6 | (b[i + 3] & 0x3F)); i += 4
        default:
            return nil
        }
    }
    return out
}
