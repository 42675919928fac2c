import Foundation

/// CLIP's BPE tokenizer as the reference text pipeline runs it: Hugging Face `CLIPTokenizer` (the Python one,
/// with ftfy installed) called with `truncation=True, max_length=77, padding="max_length"` (mmdit.md §6):
/// special-token strings in the text become their ids; every other stretch is `whitespace_clean(ftfy.fix_text(s))
/// .lower()`, split by `PreTokenizer`, UTF-8 bytes mapped to symbols, and merged by BPE; then `<|startoftext|>`,
/// at most 75 tokens, `<|endoftext|>`, and padding with `<|endoftext|>` (49407) to 77.
///
/// Measured on the 2 210 fixture strings (Scripts/fixtures/make_tokenizer_fixture.py), other CLIP tokenizers differ:
/// open_clip 3.3's `SimpleTokenizer` on 82 (it runs `html.unescape` twice after ftfy, so "&amp;amp;" and "&#59;"
/// unescape; it names its special tokens `<start_of_text>`/`<end_of_text>`, so "<|endoftext|>" in a caption is
/// ordinary text; and it pads with 0), Hugging Face's Rust `CLIPTokenizerFast` on 758 (no ftfy: NFC, its own
/// whitespace and lower-casing rules). Thread-safe; BPE results are cached per word.
public final class CLIPTokenizer: @unchecked Sendable {
    public static let contextLength = 77
    public static let startOfText: Int32 = 49406
    public static let endOfText: Int32 = 49407
    public static let padding: Int32 = 49407

    public let vocabulary: CLIPVocabulary
    private var cache: [String: [Int32]] = [:]
    private let lock = NSLock()
    /// Entries beyond this empty the cache (it holds words, so real captions stay far below).
    private let cacheLimit = 1 << 18

    public init(vocabulary: CLIPVocabulary) {
        self.vocabulary = vocabulary
    }

    public convenience init(vocabularyFile: String) throws {
        self.init(vocabulary: try CLIPVocabulary(contentsOf: vocabularyFile))
    }

    /// The 77 ids of `text`.
    public func encode(_ text: String) -> [Int32] {
        var ids = [CLIPTokenizer.startOfText]
        ids += tokenIDs(text).prefix(CLIPTokenizer.contextLength - 2)
        ids.append(CLIPTokenizer.endOfText)
        ids += [Int32](repeating: CLIPTokenizer.padding, count: CLIPTokenizer.contextLength - ids.count)
        return ids
    }

    public func encode(_ texts: [String]) -> [[Int32]] {
        texts.map { encode($0) }
    }

    /// The ids of `text` without start, end, truncation or padding (Hugging Face `tokenize` + `convert_tokens_to_ids`).
    public func tokenIDs(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        for segment in CLIPTokenizer.splitOnSpecialTokens(Array(text.unicodeScalars)) {
            switch segment {
            case .special(let id):
                ids.append(id)
            case .text(let range):
                let scalars = Array(text.unicodeScalars)[range]
                let clean = CLIPTokenizer.clean(Array(scalars))
                for piece in PreTokenizer.split(clean) {
                    switch piece {
                    case .special(let id): ids.append(id)
                    case .text(let r): ids += bpe(clean[r])
                    }
                }
            }
        }
        return ids
    }

    /// `whitespace_clean(ftfy.fix_text(text)).lower()`.
    static func clean(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        PythonText.lower(PythonText.whitespaceClean(TextFixer.fixText(text)))
    }

    /// The slow tokenizer's added-token split: exact (case-sensitive) occurrences of `<|startoftext|>` and
    /// `<|endoftext|>` are tokens of their own; the text between them is tokenised separately.
    static func splitOnSpecialTokens(_ t: [Unicode.Scalar]) -> [PreTokenizer.Piece] {
        let specials: [([Unicode.Scalar], Int32)] = [(Array("<|startoftext|>".unicodeScalars), startOfText),
                                                     (Array("<|endoftext|>".unicodeScalars), endOfText)]
        var out: [PreTokenizer.Piece] = []
        var start = 0, i = 0
        scan: while i < t.count {
            if t[i] == "<" {
                for (s, id) in specials where t.count - i >= s.count && Array(t[i..<(i + s.count)]) == s {
                    if start < i { out.append(.text(start..<i)) }
                    out.append(.special(id))
                    i += s.count; start = i
                    continue scan
                }
            }
            i += 1
        }
        if start < t.count { out.append(.text(start..<t.count)) }
        return out
    }

    /// BPE of one pre-token: its UTF-8 bytes as symbols, `</w>` on the last, merged lowest rank first.
    func bpe(_ word: ArraySlice<Unicode.Scalar>) -> [Int32] {
        var key = String.UnicodeScalarView()
        key.append(contentsOf: word)
        let keyString = String(key)
        lock.lock()
        if let hit = cache[keyString] { lock.unlock(); return hit }
        lock.unlock()
        let bytes = Array(keyString.utf8)
        var symbols = bytes.dropLast().map { vocabulary.byteID[Int($0)] }
        symbols.append(vocabulary.byteEndID[Int(bytes[bytes.count - 1])])
        let merged = merge(symbols)
        lock.lock()
        if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[keyString] = merged
        lock.unlock()
        return merged
    }

    private func merge(_ start: [Int32]) -> [Int32] {
        var word = start
        while word.count > 1 {
            var best: (rank: Int32, left: Int32, right: Int32, merged: Int32)? = nil
            for k in 0..<(word.count - 1) {
                if let m = vocabulary.merges[Self.pairKey(word[k], word[k + 1])], m.rank < (best?.rank ?? .max) {
                    best = (m.rank, word[k], word[k + 1], m.merged)
                }
            }
            guard let b = best else { break }
            var next: [Int32] = []
            next.reserveCapacity(word.count)
            var k = 0
            while k < word.count {
                if k < word.count - 1 && word[k] == b.left && word[k + 1] == b.right {
                    next.append(b.merged); k += 2
                } else {
                    next.append(word[k]); k += 1
                }
            }
            word = next
        }
        return word
    }

    @inline(__always) static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }
}
