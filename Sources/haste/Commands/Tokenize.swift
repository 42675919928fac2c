import ArgumentParser
import Foundation
import HasteText

/// `haste tokenize TEXT… | --file FILE [--json]`: the 77 CLIP token ids of each text, as the reference text
/// pipeline (Hugging Face CLIPTokenizer, padding with <|endoftext|>) makes them, to compare with Python.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the 77 CLIP BPE token ids of each text (one line of ids per text, or --json).")

    @Argument(help: "Texts to tokenise (one row of ids each).")
    var texts: [String] = []
    @Option(help: "Tokenise every line of FILE (empty lines included) instead.")
    var file: String?
    @Flag(help: "Print one JSON array holding one array of 77 ids per text.")
    var json = false
    @Option(help: "CLIP's bpe_simple_vocab_16e6.txt.gz (default: clip/ under $HASTE_CACHE, the checkout's .cache or ./.cache, as Scripts/fetch_clip_vocab.sh leaves it).")
    var tokenizerVocab: String?

    func validate() throws {
        if file != nil && !texts.isEmpty { throw ValidationError("give texts or --file, not both") }
        if file == nil && texts.isEmpty { throw ValidationError("give at least one text, or --file FILE") }
    }

    func run() throws {
        let tokenizer = try CLIPTokenizer(vocabularyFile: try CLIPVocabulary.resolve(tokenizerVocab))
        var inputs = texts
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("\(file): no such file")
            }
            var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
            if lines.last == "" { lines.removeLast() }   // a final newline ends the last line, it adds none
            inputs = lines.map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
        }
        let rows = tokenizer.encode(inputs)
        if json {
            print("[" + rows.map { "[" + $0.map(String.init).joined(separator: ",") + "]" }.joined(separator: ",") + "]")
        } else {
            for row in rows { print(row.map(String.init).joined(separator: " ")) }
        }
    }
}
