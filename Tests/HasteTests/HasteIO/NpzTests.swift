import Foundation
import Testing
import HasteTensor
@testable import HasteIO

private func sampleArrays() -> [(String, Tensor)] {
    let images = Tensor((0..<(3 * 4 * 5 * 3)).map { UInt8(truncatingIfNeeded: $0 * 7) }, shape: [3, 4, 5, 3])
    return [("arr_0", images), ("mu", Tensor.randn([7], dtype: .float64, seed: 1)),
            ("sigma", Tensor.randn([3, 2], seed: 2).transposed(0, 1)),              // written as C order
            ("labels", Tensor((0..<5).map { Int64($0 - 2) }, shape: [5])), ("scalar", Tensor.scalar(2.5, dtype: .float64))]
}

private func expectArchive(_ path: String, holds arrays: [(String, Tensor)], sourceLocation: SourceLocation = #_sourceLocation) throws {
    let f = try NpzArchive(path: path)
    #expect(f.keys == arrays.map(\.0), sourceLocation: sourceLocation)
    for (k, t) in arrays {
        let r = try f.tensor(k)
        #expect(r.dtype == t.dtype && r.shape == t.shape, "\(k)", sourceLocation: sourceLocation)
        #expect(rawBytes(r) == rawBytes(t.contiguous()), "\(k) bytes", sourceLocation: sourceLocation)
    }
}

@Test func npzRoundTripsAndStreamsRows() throws {
    try withTemporaryDirectory { dir in
        let arrays = sampleArrays()
        try NpzWriter.write(arrays, to: dir + "/a.npz")
        try expectArchive(dir + "/a.npz", holds: arrays)
        let rows = try NpzArchive(path: dir + "/a.npz").rows("arr_0", 1..<3)
        #expect(rawBytes(rows) == rawBytes(arrays[0].1.narrowed(0, start: 1, length: 2)))
        // Streaming a member piece by piece gives the same bytes as writing it whole; files are reproducible.
        let w = try NpzWriter(path: dir + "/b.npz")
        try w.beginArray("arr_0", dtype: .uint8, shape: [3, 4, 5, 3])
        for i in 0..<3 { try w.append(arrays[0].1.select(axis: 0, index: i)) }
        for (k, t) in arrays.dropFirst() { try w.add(k, t) }
        try w.finish()
        let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/a.npz")), b = try Data(contentsOf: URL(fileURLWithPath: dir + "/b.npz"))
        #expect(a == b)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["a.npz", "b.npz"])    // no temporaries left
        // Every array's data starts 64-byte aligned in the file.
        let a64 = try NpzArchive(path: dir + "/a.npz")
        #expect(try a64.keys.allSatisfy { try a64.dataOffset($0).map { $0 % 64 == 0 } ?? false })
    }
}

/// With the ZIP64 threshold at 0 every size, offset and the end record use ZIP64 fields: the layout a
/// > 4 GiB batch gets, on a small file.
@Test func npzZip64RecordsRoundTrip() throws {
    try withTemporaryDirectory { dir in
        let arrays = sampleArrays()
        let w = try NpzWriter(path: dir + "/z.npz", zip64Threshold: 0)
        for (k, t) in arrays { try w.add(k, t) }
        try w.finish()
        try expectArchive(dir + "/z.npz", holds: arrays)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/z.npz")))
        #expect(bytes.count > 98 && Array(bytes[(bytes.count - 98)..<(bytes.count - 94)]) == [0x50, 0x4B, 0x06, 0x06])
        try checkWithNumpy(dir + "/z.npz", arrays)
        try checkWithNumpy(dir + "/plain.npz", arrays, write: true)
    }
}

@Test func npzReadsNumpyArchivesAndRejectsBadOnes() throws {
    let expected = try Fixture("io_npz.safetensors")
    let f = try NpzArchive(path: try fixturePath("npz/numpy.npz"))
    #expect(f.keys == ["arr_0", "mu", "sigma", "labels"])
    for k in f.keys { expectClose(try f.tensor(k), expected[k], atol: 0, rtol: 0, k) }
    // Big-endian members (>f8, >f4, >i8) decode like .npy files do: host order, same values, also by rows.
    let be = try NpzArchive(path: try fixturePath("npz/bigendian.npz"))
    for k in ["mu", "sigma", "labels"] { expectClose(try be.tensor(k), expected[k], atol: 0, rtol: 0, "big-endian \(k)") }
    expectClose(try be.rows("labels", 1..<4), expected["labels"].narrowed(0, start: 1, length: 3), atol: 0, rtol: 0, "big-endian rows")
    try withTemporaryDirectory { dir in
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try fixturePath("npz/numpy.npz"))))
        try Data(good.prefix(good.count / 2)).write(to: URL(fileURLWithPath: dir + "/cut.npz"))
        expectFileError(dir + "/cut.npz", "not a valid .npz") { _ = try NpzArchive(path: dir + "/cut.npz") }
        #expect(throws: HasteError.self) { _ = try f.tensor("nope") }
    }
}

/// numpy (when a Python with numpy is at $HASTE_PYTHON or /opt/torchvenv/bin/python; skipped on CI) opens the
/// archive and sees the same arrays.
private func checkWithNumpy(_ path: String, _ arrays: [(String, Tensor)], write: Bool = false) throws {
    let python = ProcessInfo.processInfo.environment["HASTE_PYTHON"] ?? "/opt/torchvenv/bin/python"
    guard FileManager.default.isExecutableFile(atPath: python) else { return }
    if write { try NpzWriter.write(arrays, to: path) }
    let sums = arrays.map { k, t in "('\(k)', \(t.shape), \(t.to(.float64).sum().item()))" }.joined(separator: ", ")
    let script = """
    import sys, numpy as np
    f = np.load(sys.argv[1])
    for k, shape, s in [\(sums)]:
        a = f[k]
        assert list(a.shape) == shape, (k, a.shape, shape)
        assert abs(float(a.astype(np.float64).sum()) - s) <= 1e-9 * max(1.0, abs(s)), (k, a.sum(), s)
    print("ok")
    """
    let p = Process()
    p.executableURL = URL(fileURLWithPath: python)
    p.arguments = ["-c", script, path]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    p.waitUntilExit()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    if text.contains("No module named 'numpy'") { return }
    #expect(p.terminationStatus == 0 && text.hasPrefix("ok"), "numpy on \(path): \(text)")
}
