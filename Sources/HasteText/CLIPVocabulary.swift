import Foundation
import HasteIO
import HasteTensor

/// The CLIP BPE vocabulary built from `bpe_simple_vocab_16e6.txt.gz` exactly as open_clip's `SimpleTokenizer`
/// and Hugging Face's `CLIPTokenizer` build it: 256 byte symbols, the same with `</w>`, one entry per merge
/// (lines 1...48894 of the file), then `<|startoftext|>` and `<|endoftext|>`: 49 408 ids.
public struct CLIPVocabulary: Sendable {
    public static let size = 49408
    public static let mergeCount = 49152 - 256 - 2
    /// What to tell a user whose vocabulary file is missing.
    public static let fetchHint = "Fetch it with Scripts/fetch_clip_vocab.sh (from PyPI open_clip_torch) or pass "
        + "--tokenizer-vocab FILE (bpe_simple_vocab_16e6.txt.gz, from open_clip's package folder)."

    /// Where Scripts/fetch_clip_vocab.sh leaves the file, under a `.cache` folder.
    public static let cachedName = "clip/bpe_simple_vocab_16e6.txt.gz"

    /// `path` when given, else the cached file as `AssetLocator` finds it ($HASTE_CACHE, the checkout's .cache,
    /// ./.cache); a miss lists every place searched and how to fetch the file.
    public static func resolve(_ path: String?, locator: AssetLocator = AssetLocator()) throws -> String {
        if let path { return path }
        return try locator.locate(cachedName, fetch: fetchHint)
    }

    /// Token string (byte-level symbols) → id; later duplicates win, as `dict(zip(vocab, range(len(vocab))))`.
    public let encoder: [String: Int32]
    /// id → token string.
    public let decoder: [String]
    /// (left id, right id) packed as `left << 32 | right` → (merge rank, id of the merged symbol).
    let merges: [UInt64: (rank: Int32, merged: Int32)]
    /// Byte value → id of its symbol, without and with `</w>`.
    let byteID: [Int32], byteEndID: [Int32]

    /// GPT-2's `bytes_to_unicode`: the printable bytes map to themselves, the rest to U+0100 and on; in that order.
    static let byteOrder: [(byte: UInt8, symbol: Unicode.Scalar)] = {
        let printable = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        var order = printable.map { (UInt8($0), Unicode.Scalar(UInt32($0))!) }
        var n: UInt32 = 0
        for b in 0..<256 where !printable.contains(b) {
            order.append((UInt8(b), Unicode.Scalar(256 + n)!)); n += 1
        }
        return order
    }()

    /// Loads the gzip file (or a plain-text copy of it).
    public init(contentsOf path: String) throws {
        guard let raw = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: CLIPVocabulary.fetchHint)
        }
        let data = raw.starts(with: [0x1F, 0x8B]) ? try Gzip.decompress(raw, name: path) : raw
        guard let text = String(data: data, encoding: .utf8) else {
            throw HasteError.fileFormat(path: path, detail: "not a CLIP BPE merges file (not UTF-8 text). " + CLIPVocabulary.fetchHint)
        }
        try self.init(mergesText: text, name: path)
    }

    public init(mergesText text: String, name: String) throws {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count > CLIPVocabulary.mergeCount else {
            throw HasteError.fileFormat(path: name, detail: "not a CLIP BPE merges file: \(lines.count) lines, expected at "
                + "least \(CLIPVocabulary.mergeCount + 1). " + CLIPVocabulary.fetchHint)
        }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(CLIPVocabulary.mergeCount)
        for (n, line) in lines[1...CLIPVocabulary.mergeCount].enumerated() {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard parts.count == 2 else {
                throw HasteError.fileFormat(path: name, detail: "not a CLIP BPE merges file: line \(n + 2) is not two "
                    + "symbols separated by a space. " + CLIPVocabulary.fetchHint)
            }
            pairs.append((String(parts[0]), String(parts[1])))
        }
        var vocab = CLIPVocabulary.byteOrder.map { String($0.symbol) }
        vocab += vocab.map { $0 + "</w>" }
        vocab += pairs.map { $0.0 + $0.1 }
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        var encoder: [String: Int32] = [:]
        encoder.reserveCapacity(vocab.count)
        for (i, token) in vocab.enumerated() { encoder[token] = Int32(i) }
        var merges: [UInt64: (rank: Int32, merged: Int32)] = [:]
        merges.reserveCapacity(pairs.count)
        for (rank, (a, b)) in pairs.enumerated() {   // a repeated pair keeps its last rank, as Python's dict(zip(...))
            guard let l = encoder[a], let r = encoder[b], let m = encoder[a + b] else { continue }
            merges[UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))] = (Int32(rank), m)
        }
        var byteID = [Int32](repeating: 0, count: 256), byteEndID = byteID
        for (i, entry) in CLIPVocabulary.byteOrder.enumerated() {
            byteID[Int(entry.byte)] = Int32(i)
            byteEndID[Int(entry.byte)] = Int32(256 + i)
        }
        (self.encoder, self.decoder, self.merges, self.byteID, self.byteEndID) = (encoder, vocab, merges, byteID, byteEndID)
    }
}
