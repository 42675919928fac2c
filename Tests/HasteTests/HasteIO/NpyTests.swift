import Foundation
import Testing
import HasteTensor
@testable import HasteIO

/// Files numpy wrote (Scripts/fixtures/io.py), each with its expected C-order tensor in io_npy.safetensors.
let numpyFixtures = ["f4", "f8", "f2", "i4", "i8", "u1", "b1", "scalar", "empty", "be_f4", "be_i8", "be_f8", "fortran",
                     "v2_f4", "v3_f4"]

@Test func npyReadsNumpyFilesBitIdentically() throws {
    let expected = try SafetensorsFile(path: try fixturePath("io_npy.safetensors"))
    for name in numpyFixtures {
        let t = try NpyFile.read(try fixturePath("npy/\(name).npy"))
        let e = try expected.tensor(name)
        #expect(t.dtype == e.dtype && t.shape == e.shape, "\(name): \(t.dtype) \(t.shape) vs \(e.dtype) \(e.shape)")
        #expect(rawBytes(t) == rawBytes(e), "\(name): bytes differ")
    }
    #expect(try NpyFile.read(try fixturePath("npy/fortran.npy")).scalars(as: Float.self) == (0..<24).map(Float.init))
}

@Test func npyHeadersReportVersionOrderAndShape() throws {
    let scalar = try NpyFile.header(try fixturePath("npy/scalar.npy"))
    #expect(scalar.shape == [] && scalar.dtype == .float64 && scalar.version == "1.0")
    #expect(try NpyFile.header(try fixturePath("npy/f8.npy")).shape == [5])
    let fortran = try NpyFile.header(try fixturePath("npy/fortran.npy"))
    #expect(fortran.fortranOrder && fortran.shape == [2, 3, 4])
    let big = try NpyFile.header(try fixturePath("npy/be_f4.npy"))
    #expect(big.isBigEndian && big.descr == ">f4" && big.dtype == .float32)
    #expect(try NpyFile.header(try fixturePath("npy/v2_f4.npy")).version == "2.0")
    #expect(try NpyFile.header(try fixturePath("npy/v3_f4.npy")).version == "3.0")
    #expect(try NpyFile.header(try fixturePath("npy/u1.npy")).descr == "|u1")
}

/// Our writer produces numpy's exact bytes (header text and padding included) for every dtype numpy has.
@Test func npyWriterMatchesNumpyByteForByte() throws {
    let expected = try SafetensorsFile(path: try fixturePath("io_npy.safetensors"))
    try withTemporaryDirectory { dir in
        for name in ["f4", "f8", "f2", "i4", "i8", "u1", "b1", "scalar", "empty"] {
            let path = dir + "/\(name).npy"
            try NpyFile.write(try expected.tensor(name), to: path)
            #expect(readBytes(path) == readBytes(try fixturePath("npy/\(name).npy")), "\(name).npy differs from numpy's")
        }
    }
}

@Test func npyRoundTripsLayoutsAndRefusesBFloat16() throws {
    try withTemporaryDirectory { dir in
        let path = dir + "/t.npy"
        let t = Tensor((0..<35).map(Double.init), shape: [5, 7]).transposed(0, 1)
        try NpyFile.write(t, to: path)
        let back = try NpyFile.read(path)
        #expect(back.shape == [7, 5] && back.scalars(as: Double.self) == t.scalars(as: Double.self))
        let wide = Tensor.zeros(Array(repeating: 1, count: 40) + [3])   // a long shape tuple still fits 1.0
        try NpyFile.write(wide, to: path)
        #expect(try NpyFile.read(path).shape == wide.shape)
        #expect(readBytes(path).count % 64 == 12, "header padded to 64 bytes (+12 data bytes)")
        expectFileError(dir + "/bf.npy", "numpy has no bfloat16") {
            try NpyFile.write(Tensor.zeros([2], dtype: .bfloat16), to: dir + "/bf.npy")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["t.npy"])
    }
}

/// A .npy file from a header dict and data bytes, padded the way numpy pads.
func craftNpy(_ dict: String, data: [UInt8] = [], version: UInt8 = 1) -> [UInt8] {
    var text = Array(dict.utf8)
    let prefix = version == 1 ? 10 : 12
    while (prefix + text.count + 1) % 64 != 0 { text.append(0x20) }
    text.append(0x0A)
    let length = version == 1 ? leBytes([UInt16(text.count)]) : leBytes([UInt32(text.count)])
    return NpyHeader.magic + [version, 0] + length + text + data
}

@Test func npyRejectsMalformedFilesNamingThem() {
    withTemporaryDirectory { dir in
        let path = dir + "/bad.npy"
        func expectBad(_ bytes: [UInt8], _ phrases: String..., sourceLocation: SourceLocation = #_sourceLocation) {
            writeBytes(bytes, path)
            do {
                _ = try NpyFile.read(path)
                Issue.record("accepted a bad file; expected \(phrases)", sourceLocation: sourceLocation)
            } catch let error as HasteError {
                #expect(error.description.contains(path), "\(error)", sourceLocation: sourceLocation)
                for p in phrases { #expect(error.description.contains(p), "\(error)", sourceLocation: sourceLocation) }
            } catch { Issue.record("not a HasteError: \(error)", sourceLocation: sourceLocation) }
        }
        let f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        let data: [UInt8] = [0, 0, 128, 63, 0, 0, 0, 64]
        #expect(throws: Never.self) { writeBytes(craftNpy(f4, data: data), path); _ = try NpyFile.read(path) }
        expectBad(Array("hello world".utf8), "magic")
        expectBad(Array(craftNpy(f4, data: data).prefix(9)), "magic")
        expectBad(craftNpy(f4, data: data).enumerated().map { $0.offset == 6 ? 4 : $0.element }, "version 4.0")
        expectBad(Array(craftNpy(f4, data: data).prefix(40)), "runs past the end", "truncated")
        expectBad(craftNpy(f4, data: Array(data.prefix(5))), "needs 8 data bytes", "truncated")
        expectBad(craftNpy(f4, data: data + [1]), "1 bytes follow")
        expectBad(craftNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", data: data), "Python dict literal")
        expectBad(craftNpy("not a dict at all", data: data), "Python dict literal")
        expectBad(craftNpy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", data: data), "'<c8' is not supported")
        expectBad(craftNpy("{'descr': '<u2', 'fortran_order': False, 'shape': (4,), }", data: data), "'<u2' is not supported")
        expectBad(craftNpy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data: data), "structured")
        expectBad(craftNpy("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", data: data), "fortran_order")
        expectBad(craftNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", data: data), "negative")
        expectBad(craftNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", data: data), "header keys")
        expectBad(craftNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }"), "too large")
        expectBad(craftNpy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"), "too big to address")
        expectBad(craftNpy(String(repeating: "(", count: 100) + String(repeating: ")", count: 100)), "nested too deeply")
    }
    expectFileError("/nonexistent/x.npy", "no such file") { _ = try NpyFile.read("/nonexistent/x.npy") }
}

@Test func npyHeaderParserAcceptsWhatNumpyHasWritten() throws {
    func parse(_ text: String) throws -> PythonLiteral {
        var p = PythonLiteralParser(Array(text.utf8))
        return try p.parseWhole()
    }
    #expect(try parse("{'shape': (3L, 4L), \"descr\": '<f4', 'fortran_order': True}")
            == .dict(["shape": .tuple([.int(3), .int(4)]), "descr": .string("<f4"), "fortran_order": .bool(true)]))
    #expect(try parse("()") == .tuple([]) && parse("(5,)") == .tuple([.int(5)]) && parse(" [None, -1] ") == .list([.none, .int(-1)]))
    #expect(throws: PythonLiteralParser.Failure.self) { try parse("(1 2)") }
    #expect(throws: PythonLiteralParser.Failure.self) { try parse("'open") }
}
