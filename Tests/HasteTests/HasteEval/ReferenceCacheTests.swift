import Foundation
import Testing
@testable import HasteEval
import HasteIO
import HasteModels
import HasteTensor

// Reference statistics computed once (Sources/HasteEval/ReferenceStatsCache.swift, issue #18 item 2).

@Test func sha256MatchesTheStandardVectors() throws {
    #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    let two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"                  // 56 bytes: padding spills a block
    #expect(SHA256.hex(Array(two.utf8)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    var streamed = SHA256()                                                            // split updates = one update
    let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
    million.withUnsafeBytes { b in for s in stride(from: 0, to: b.count, by: 777) { streamed.update(UnsafeRawBufferPointer(rebasing: b[s..<min(s + 777, b.count)])) } }
    #expect(streamed.finalizeHex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
}

/// The digest of a file is computed once per (path, size, mtime): a planted digest is returned while the file
/// is unchanged, and a changed file is hashed again.
@Test func fileDigestsAreRememberedByPathSizeAndTime() throws {
    let dir = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let file = "\(dir)/weights.bin"
    try Data("weights v1".utf8).write(to: URL(fileURLWithPath: file))
    let first = try CacheDirectory.digest(ofFile: file, cache: dir)
    #expect(first == SHA256.hex(Array("weights v1".utf8)))
    let store = "\(dir)/file-digests.json"
    let planted = try String(contentsOfFile: store, encoding: .utf8).replacingOccurrences(of: first, with: String(repeating: "7", count: 64))
    try planted.write(toFile: store, atomically: true, encoding: .utf8)
    #expect(try CacheDirectory.digest(ofFile: file, cache: dir) == String(repeating: "7", count: 64))   // not re-hashed
    try Data("weights v2, longer".utf8).write(to: URL(fileURLWithPath: file))
    #expect(try CacheDirectory.digest(ofFile: file, cache: dir) == SHA256.hex(Array("weights v2, longer".utf8)))
    #expect(throws: HasteError.self) { try CacheDirectory.digest(ofFile: "\(dir)/missing.bin", cache: dir) }
}

@Test func cacheKeysChangeWithCountWeightsModeAndSource() throws {
    let dir = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let a = ReferenceStatsCache(directory: dir, weightsDigest: "aaa"), b = ReferenceStatsCache(directory: dir, weightsDigest: "bbb")
    let base = try a.entry(source: "fashion-mnist:t10k", count: 10_000, mode: .adm)
    #expect(base.path.hasPrefix("\(dir)/fashion-mnist-t10k-adm-n10000-") && base.path.hasSuffix(".safetensors"))
    let others = [try a.entry(source: "fashion-mnist:t10k", count: 5_000, mode: .adm), try b.entry(source: "fashion-mnist:t10k", count: 10_000, mode: .adm),
                  try a.entry(source: "fashion-mnist:t10k", count: 10_000, mode: .pytorchFID), try a.entry(source: "fashion-mnist:train", count: 10_000, mode: .adm)]
    #expect(Set(others.map(\.path) + [base.path]).count == 5 && Set(others.map(\.key) + [base.key]).count == 5)
    #expect(try a.entry(source: "fashion-mnist:t10k", count: 10_000, mode: .adm) == base)   // stable
    let folder = "\(dir)/pngs"                                                          // a folder: its files are part of the key
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try Data([1]).write(to: URL(fileURLWithPath: "\(folder)/a.png"))
    let before = ReferenceStatsCache.identity(of: folder)
    try Data([1]).write(to: URL(fileURLWithPath: "\(folder)/b.png"))
    #expect(ReferenceStatsCache.identity(of: folder) != before && before.hasPrefix(URL(fileURLWithPath: folder).standardizedFileURL.path))
}

/// Counts the batches read, so a test can tell computed statistics from cached ones.
final class CountingImages: ImageSource {
    let base: TensorImages
    var reads = 0
    init(_ t: Tensor) { base = TensorImages(t) }
    var count: Int { base.count }
    func images(_ range: Range<Int>) throws -> Tensor { reads += 1; return try base.images(range) }
}

/// First call computes and stores; the second reads no image and gives the same statistics and pool rows; a
/// damaged entry (one flipped byte in sigma) is reported and recomputed, never used.
@Test(.enabled(if: inceptionCached, Comment(rawValue: inceptionSkip)))
func referenceStatisticsAreComputedOnce() throws {
    let dir = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let model = try RealInceptionRun.shared.get().model
    let evaluator = FIDEvaluator(extractor: InceptionFeatureExtractor(model: model, input: .adm), weightsName: "default_1.pt",
                                 referenceCache: ReferenceStatsCache(directory: dir, weightsDigest: "test"))
    var messages: [String] = []
    evaluator.log = { messages.append($0) }
    let values: [UInt8] = (0..<(3 * 3 * 8 * 8)).map { (i: Int) -> UInt8 in UInt8(truncatingIfNeeded: i * 37) }
    let pixels = Tensor(values, shape: [3, 3, 8, 8])
    let images = CountingImages(pixels)
    let set = EvalSet(path: "reference-\(UUID().uuidString)", images: images, stored: nil)
    let first = try evaluator.referenceFeatures(of: set)
    #expect(images.reads > 0 && first.extracted != nil && first.cached == nil)
    let (_, path) = try evaluator.referenceCache!.entry(source: set.path, count: 3, mode: .adm)
    #expect(FileManager.default.fileExists(atPath: path))
    images.reads = 0
    let second = try evaluator.referenceFeatures(of: set, keepPool: true)
    #expect(images.reads == 0 && second.extracted == nil && second.cached?.path == path)
    #expect(second.pool == first.pool)
    #expect(second.spatial == first.spatial)
    #expect(second.poolFeatures?.shape == [3, 2048])
    #expect(messages.contains("using cached reference statistics \(path)"))
    var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    bytes[bytes.count - 8] ^= 0x40                                                       // inside the last tensor's data
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    let third = try evaluator.referenceFeatures(of: set)
    #expect(images.reads > 0 && third.extracted != nil)
    let drift = zip(third.pool.mean, first.pool.mean).map { Swift.abs($0 - $1) }.max()!   // BLAS blocking may differ: not ==
    #expect(drift <= 1e-6 * (first.pool.mean.map(Swift.abs).max()! + 1))
    #expect(messages.contains { $0.hasPrefix("warning: ignoring the cached reference statistics \(path)") && $0.contains("CRC-32") })
    #expect(try evaluator.referenceFeatures(of: set).cached != nil)                     // rewritten, valid again
}
