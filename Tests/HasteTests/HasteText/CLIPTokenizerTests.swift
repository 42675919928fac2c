import Foundation
import HasteText
import Testing

/// The cached vocabulary (Scripts/fetch_clip_vocab.sh), or nil with a printed warning: offline, these tests skip.
func clipVocabularyPath() -> String? {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    let path = root.appendingPathComponent(".cache/clip/bpe_simple_vocab_16e6.txt.gz").path
    if FileManager.default.fileExists(atPath: path) { return path }
    print("warning: \(path) is missing (run Scripts/fetch_clip_vocab.sh); skipping the CLIP tokenizer test")
    return nil
}

private let sharedTokenizer: CLIPTokenizer? = clipVocabularyPath().flatMap { try? CLIPTokenizer(vocabularyFile: $0) }

private struct TokenizerFixture: Decodable {
    let texts: [String]
    let kinds: [String]
    let ids: [[Int32]]

    static func load() throws -> TokenizerFixture {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/clip_tokenizer.json", withExtension: nil))
        return try JSONDecoder().decode(TokenizerFixture.self, from: Data(contentsOf: url))
    }
}

/// Every fixture string (Scripts/fixtures/make_tokenizer_fixture.py: Hugging Face CLIPTokenizer with ftfy, as the
/// reference pipeline calls it) gives exactly the reference's 77 ids.
@Test func tokenizerMatchesReferenceOnEveryFixtureString() throws {
    guard let tokenizer = sharedTokenizer else { return }
    let fixture = try TokenizerFixture.load()
    #expect(fixture.texts.count >= 2000 && fixture.texts.count == fixture.ids.count)
    var mismatches = 0
    for (n, text) in fixture.texts.enumerated() {
        let expected = fixture.ids[n] + [Int32](repeating: 49407, count: 77 - fixture.ids[n].count)
        let got = tokenizer.encode(text)
        if got != expected {
            mismatches += 1
            Issue.record("[\(fixture.kinds[n])] \(String(reflecting: text))\n  reference \(expected)\n  haste     \(got)")
        }
    }
    #expect(mismatches == 0, "\(mismatches) of \(fixture.texts.count) strings differ")
}

@Test func tokenizerShapeAndSpecialTokens() throws {
    guard let tokenizer = sharedTokenizer else { return }
    let empty = tokenizer.encode("")
    #expect(empty == [49406] + [Int32](repeating: 49407, count: 76))
    #expect(tokenizer.vocabulary.decoder.count == CLIPVocabulary.size)
    let long = tokenizer.encode(String(repeating: "dog ", count: 200))
    #expect(long.count == 77 && long[0] == 49406 && long[76] == 49407 && long[75] != 49407)
    // "a photo of a cat" in every CLIP implementation.
    #expect(Array(tokenizer.encode("A photo of a cat.").prefix(8)) == [49406, 320, 1125, 539, 320, 2368, 269, 49407])
}

@Test func garbledVocabularyFilesAreRefusedWithAHint() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haste-vocab-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let missing = dir.appendingPathComponent("none.txt.gz").path
    #expect(throws: Error.self) { try CLIPVocabulary(contentsOf: missing) }
    do { _ = try CLIPVocabulary(contentsOf: missing) } catch {
        #expect("\(error)".contains("fetch_clip_vocab.sh") && "\(error)".contains(missing))
    }
    let short = dir.appendingPathComponent("short.txt").path
    try "#version\na b\n".write(toFile: short, atomically: true, encoding: .utf8)
    do { _ = try CLIPVocabulary(contentsOf: short); Issue.record("a 3-line file was accepted") } catch {
        #expect("\(error)".contains("not a CLIP BPE merges file"), "\(error)")
    }
    let gz = dir.appendingPathComponent("bad.txt.gz").path
    try Data([0x1F, 0x8B, 0x08, 0x00, 0x01, 0x02, 0x03]).write(to: URL(fileURLWithPath: gz))
    #expect(throws: Error.self) { try CLIPVocabulary(contentsOf: gz) }
    let badLine = dir.appendingPathComponent("badline.txt").path
    try (["#version"] + (0..<CLIPVocabulary.mergeCount).map { $0 == 7 ? "abc" : "a\($0) b" }).joined(separator: "\n")
        .write(toFile: badLine, atomically: true, encoding: .utf8)
    do { _ = try CLIPVocabulary(contentsOf: badLine); Issue.record("a malformed line was accepted") } catch {
        #expect("\(error)".contains("line 9"), "\(error)")
    }
}

/// Throughput on caption-like text (printed, not asserted: tests never depend on timing).
@Test func tokenizerThroughputIsReported() throws {
    guard let tokenizer = sharedTokenizer else { return }
    let fixture = try TokenizerFixture.load()
    let captions = zip(fixture.texts, fixture.kinds).filter { $0.1 == "caption" }.map(\.0)
    let fresh = CLIPTokenizer(vocabulary: tokenizer.vocabulary)
    let start = Date()
    var total = 0
    for _ in 0..<5 { for c in captions { total += fresh.encode(c).count } }
    let seconds = Date().timeIntervalSince(start)
    #expect(total == 5 * 77 * captions.count)
    print("CLIP tokenizer: \(Int(Double(5 * captions.count) / seconds)) captions/s (debug build unless -c release)")
}
