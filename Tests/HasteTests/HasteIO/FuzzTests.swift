import Foundation
import Testing
import HasteTensor
@testable import HasteIO

/// Mutations of a valid file: truncation, bit flips (half of them inside the header, where they matter
/// most), and overwriting a byte with an extreme value.
func mutations(of bytes: [UInt8], headerEnd: Int, count: Int, seed: UInt64) -> [[UInt8]] {
    var rng = SplitMix64(state: seed)
    return (0..<count).map { _ in
        var b = bytes
        switch rng.below(3) {
        case 0: b.removeLast(1 + rng.below(b.count))
        case 1:
            for _ in 0...rng.below(3) {
                let i = rng.below(2) == 0 ? rng.below(headerEnd) : rng.below(b.count)
                b[i] ^= UInt8(1) << UInt8(rng.below(8))
            }
        default: b[rng.below(headerEnd)] = [0x00, 0xFF, 0x7F, 0x22, 0x2C, 0x7D][rng.below(6)]
        }
        return b
    }
}

/// Each mutated file either parses (and all its tensors read) or throws a HasteError naming it; never traps.
func fuzz(_ original: [UInt8], headerEnd: Int, path: String, seed: UInt64, read: (String) throws -> Void) -> (Int, Int) {
    fuzzEach(mutations(of: original, headerEnd: headerEnd, count: 300, seed: seed), path: path, read: read)
}

@Test func fuzzedSafetensorsFilesParseOrThrow() throws {
    try withTemporaryDirectory { dir in
        let valid = dir + "/valid.safetensors"
        try SafetensorsWriter.write(Array(everyDTypeTensors().prefix(9)), metadata: ["step": "7", "note": "x"], to: valid)
        let bytes = readBytes(valid)
        let headerEnd = 8 + Int(bytes.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        let (parsed, rejected) = fuzz(bytes, headerEnd: headerEnd, path: dir + "/m.safetensors", seed: 1) { path in
            _ = try SafetensorsFile(path: path).tensors()
        }
        #expect(parsed + rejected == 300 && rejected > 100 && parsed > 10, "parsed \(parsed), rejected \(rejected)")
    }
}

@Test func fuzzedNpyFilesParseOrThrow() throws {
    try withTemporaryDirectory { dir in
        let valid = dir + "/valid.npy"
        try NpyFile.write(Tensor((0..<35).map(Float.init), shape: [5, 7]), to: valid)
        let (parsed, rejected) = fuzz(readBytes(valid), headerEnd: 128, path: dir + "/m.npy", seed: 2) { path in
            _ = try NpyFile.read(path)
        }
        #expect(parsed + rejected == 300 && rejected > 100 && parsed > 10, "parsed \(parsed), rejected \(rejected)")
    }
}
