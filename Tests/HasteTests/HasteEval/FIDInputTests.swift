import Foundation
import Testing
@testable import HasteEval
import HasteIO
import HasteModels
import HasteTensor

// Inputs of `haste fid`: numpy's npz archives (NpzReader), PNG folders, statistics files.

@Test func npzReadsWhatNumpyWrites() throws {
    let f = try Fixture("fid_metrics.safetensors")
    let all = try NpzArchive.read(try fixturePath("npz/adm_batch.npz"))
    #expect(Set(all.keys) == ["arr_0", "mu", "sigma", "mu_s", "sigma_s"])
    for key in all.keys {
        #expect(all[key]!.dtype == f["npz.\(key)"].dtype, "\(key)")
        expectClose(all[key]!, f["npz.\(key)"], atol: 0, rtol: 0, key)
    }
    let npz = try NpzArchive(path: try fixturePath("npz/adm_batch.npz"))
    expectClose(try npz.rows("arr_0", 1..<4), f["npz.arr_0"].narrowed(0, start: 1, length: 3), atol: 0, rtol: 0, "rows")
    #expect(try npz.header("arr_0").shape == [5, 4, 6, 3])
    let compressed = try NpzArchive(path: try fixturePath("npz/compressed.npz"))           // np.savez_compressed: deflate
    expectClose(try compressed.rows("arr_0", 2..<5), f["npz.arr_0"].narrowed(0, start: 2, length: 3), atol: 0, rtol: 0, "deflated rows")
    #expect(try compressed.tensor("labels").scalars(as: Int64.self) == [0, 1, 2, 3, 4])
    let fortran = try NpzArchive(path: try fixturePath("npz/fortran.npz"))
    expectClose(try fortran.tensor("f"), f["npz.sigma"], atol: 0, rtol: 0, "Fortran order")
    #expect(throws: HasteError.self) { try npz.tensor("missing") }
    #expect(throws: HasteError.self) { try npz.rows("arr_0", 3..<9) }
}

/// An ADM batch opens as images (arr_0 → [n, 3, H, W]) plus stored statistics; a stats-only archive needs mu.
@Test func evalSetOpensADMBatches() throws {
    let f = try Fixture("fid_metrics.safetensors")
    let set = try EvalSet.open(try fixturePath("npz/adm_batch.npz"))
    let images = try #require(set.images)
    #expect(images.count == 5)
    expectClose(try images.images(0..<2), f["npz.arr_0"].narrowed(0, start: 0, length: 2).permuted([0, 3, 1, 2]), atol: 0, rtol: 0)
    #expect(set.stored?.pool.mean == f["npz.mu"].scalars(as: Double.self) && set.stored?.spatial?.dimension == 2)
    #expect(throws: HasteError.self) { try EvalSet.open(try fixturePath("npz/fortran.npz")) }   // neither arr_0 nor mu
}

@Test func pngFolderReadsSortedImages() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("haste-fid-png-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for (i, name) in ["b.png", "a.png", "c.PNG"].enumerated() {
        try PNGImage.write((0..<(5 * 3 * 3)).map { UInt8(($0 * 7 + i * 50) % 256) }, height: 5, width: 3, channels: 3, to: "\(dir)/\(name)")
    }
    _ = FileManager.default.createFile(atPath: "\(dir)/notes.txt", contents: Data("x".utf8))
    let folder = try PNGFolder(directory: dir)
    #expect(folder.files.map { ($0 as NSString).lastPathComponent } == ["a.png", "b.png", "c.PNG"])
    let batch = try folder.images(0..<3)
    #expect(batch.shape == [3, 3, 5, 3] && batch.dtype == .uint8)
    let first = batch.scalars(as: UInt8.self)
    #expect(first[0] == 50 && first[15] == 57)            // a.png (i = 1): pixel (0, 0) red, then green of pixel (0, 0)
    try PNGImage.write([UInt8](repeating: 0, count: 12), height: 2, width: 2, channels: 3, to: "\(dir)/d.png")
    #expect(throws: HasteError.self) { try PNGFolder(directory: dir).images(0..<4) }   // mixed sizes
}

@Test func statsFileRoundTrips() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("haste-stats-\(getpid()).safetensors").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    let pool = FeatureStatistics(mean: [1, 2], covariance: [2, 0.5, 0.5, 1], count: 7)
    let spatial = FeatureStatistics(mean: [3], covariance: [4], count: 7)
    try StatsFile(pool: pool, spatial: spatial, mode: .pytorchFID, weights: "default_1.pt").write(to: path)
    let back = try StatsFile.read(path)
    #expect(back.pool == pool && back.spatial == spatial && back.mode == .pytorchFID && back.weights == "default_1.pt")
    let set = try EvalSet.open(path)
    #expect(set.images == nil && set.storedMode == .pytorchFID)
}
