import Foundation
import Testing

/// Runs `haste` with `arguments`; returns the exit status, stdout and stderr.
func runHasteOutput(_ arguments: [String], environment: [String: String]? = nil) throws
    -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try hasteExecutable())
    p.arguments = arguments
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

private let photoOfACat: [Int] = [49406, 320, 1125, 539, 320, 2368, 269, 49407] + Array(repeating: 49407, count: 69)
private let empty: [Int] = [49406] + Array(repeating: 49407, count: 76)

private func row(_ line: Substring) -> [Int] { line.split(separator: " ").map { Int($0)! } }

@Test func tokenizeCommandPrintsOneRowOf77IdsPerText() throws {
    guard let vocab = clipVocabularyPath() else { return }
    let r = try runHasteOutput(["tokenize", "--tokenizer-vocab", vocab, "A photo of a cat.", ""])
    #expect(r.status == 0, "\(r.stderr)")
    let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
    #expect(lines.count == 3 && lines[2].isEmpty, "\(r.stdout)")
    #expect(row(lines[0]) == photoOfACat && row(lines[1]) == empty)
}

@Test func tokenizeCommandReadsEveryLineOfAFileIncludingEmptyOnes() throws {
    guard let vocab = clipVocabularyPath() else { return }
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("haste-tokenize-\(UUID().uuidString).txt")
    defer { try? FileManager.default.removeItem(at: file) }
    try "A photo of a cat.\n\nA photo of a cat.\r\n".write(to: file, atomically: true, encoding: .utf8)
    let r = try runHasteOutput(["tokenize", "--tokenizer-vocab", vocab, "--file", file.path])
    #expect(r.status == 0, "\(r.stderr)")
    let rows = r.stdout.split(separator: "\n").map(row)
    #expect(rows == [photoOfACat, empty, photoOfACat], "\(r.stdout)")
    let json = try runHasteOutput(["tokenize", "--tokenizer-vocab", vocab, "--file", file.path, "--json"])
    #expect(json.status == 0, "\(json.stderr)")
    let parsed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[Int]]
    #expect(parsed == [photoOfACat, empty, photoOfACat], "\(json.stdout)")
}

@Test func tokenizeCommandNamesAMissingOrGarbledVocabularyAndHowToFetchIt() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haste-tokvocab-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let missing = dir.appendingPathComponent("none.txt.gz").path
    let r = try runHasteOutput(["tokenize", "--tokenizer-vocab", missing, "a cat"])
    #expect(r.status == 1 && r.stderr.contains(missing) && r.stderr.contains("Scripts/fetch_clip_vocab.sh")
            && r.stderr.contains("--tokenizer-vocab"), "\(r)")
    let garbled = dir.appendingPathComponent("garbled.txt.gz").path
    try Data([0x1F, 0x8B, 0x08, 0x00, 0xDE, 0xAD]).write(to: URL(fileURLWithPath: garbled))
    let g = try runHasteOutput(["tokenize", "--tokenizer-vocab", garbled, "a cat"])
    #expect(g.status == 1 && g.stderr.contains(garbled), "\(g)")
    let noArgs = try runHasteOutput(["tokenize"])
    #expect(noArgs.status == 64 && noArgs.stderr.contains("--file"), "\(noArgs)")
}
