import Foundation
import Testing
import HasteIO
import HasteTensor

/// Issue #17: TensorBoard event files written directly: CRC-32C, TFRecord framing and `Event` protobufs against
/// known vectors and against TensorBoard's own writer (Scripts/fixtures/make_tfevents_fixture.py).
struct TensorBoardEventTests {
    @Test func crc32cMatchesKnownVectors() {
        // "123456789" is the check value of the CRC catalogue; the 32-byte vectors are RFC 3720's (iSCSI).
        let cases: [([UInt8], UInt32, UInt32)] = [
            (Array("123456789".utf8), 0xE306_9283, 0xC78A_B0E5), ([], 0, 0xA282_EAD8),
            ([UInt8](repeating: 0, count: 32), 0x8A91_36AA, 0x0FD7_FFFA), ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43, 0xF909_B029),
            ((0..<32).map { UInt8($0) }, 0x46DD_794E, 0x951F_7892), ((0..<32).reversed().map { UInt8($0) }, 0x113F_DB5C, 0x593B_0D57),
        ]
        for (bytes, crc, masked) in cases {   // masked: tensorboard.compat.tensorflow_stub's masked_crc32c
            #expect(CRC32C.checksum(bytes) == crc, "\(bytes.prefix(9))")
            #expect(CRC32C.masked(bytes) == masked, "\(bytes.prefix(9))")
        }
        #expect(CRC32C.checksum(Array("123456789".utf8)[2...]) == CRC32C.checksum(Array("3456789".utf8)), "slices")
    }

    @Test func recordFramingIsTensorFlows() throws {
        // tensorboard.summary.writer.record_writer.RecordWriter().write(b"\x01\x02\x03")
        #expect(TFRecord.frame([1, 2, 3]) == [3, 0, 0, 0, 0, 0, 0, 0, 176, 153, 73, 14, 1, 2, 3, 57, 205, 192, 134])
        let payloads: [[UInt8]] = [[], [7], (0..<300).map { UInt8($0 % 251) }]
        let file = payloads.flatMap(TFRecord.frame)
        #expect(try TFEventReader.records(file) == payloads)
        var corrupt = file
        corrupt[file.count - 5] ^= 1                                         // last payload byte: its CRC fails
        #expect(throws: HasteError.self) { try TFEventReader.records(corrupt) }
        #expect(throws: HasteError.self) { try TFEventReader.records(Array(file.dropLast())) }
    }

    /// The fixture's events re-encoded by haste give TensorBoard's file byte for byte (file name aside).
    @Test func recordsMatchTensorBoardsWriterByteForByte() throws {
        let dir = try #require(Bundle.module.url(forResource: "Fixtures/tfevents", withExtension: nil)).path
        let spec = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/events.json"))) as? [String: Any])
        let header = spec["header"] as! [String: Any], events = spec["events"] as! [[String: Any]]
        var ours = [TensorBoardEvent.header(wallTime: header["wall_time"] as! Double, writer: header["writer"] as! String)]
        for e in events {
            let (wall, step) = (e["wall_time"] as! Double, e["step"] as! Int)
            if e["session_start"] as? Bool == true {
                ours.append(TensorBoardEvent.sessionStart(step: step, wallTime: wall))
            } else if let scalars = e["scalars"] as? [[Any]] {
                ours.append(TensorBoardEvent.scalars(scalars.map { ($0[0] as! String, Float($0[1] as! Double)) }, step: step, wallTime: wall))
            } else {
                let image = e["image"] as! [String: Any], png = "\(dir)/\(image["png"] as! String)"
                let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: png)))
                ours.append(try TensorBoardEvent.image(tag: image["tag"] as! String, png: bytes, step: step, wallTime: wall, path: png))
            }
        }
        let theirs = Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/events.tfevents")))
        let records = try TFEventReader.records(theirs)
        #expect(records.count == ours.count && records.count == 10)
        for (i, (a, b)) in zip(ours, records).enumerated() { #expect(a == b, "record \(i) differs") }
        #expect(ours.flatMap(TFRecord.frame) == theirs, "the whole file")

        // And the reader sees what was meant: the header, the session start, a 2^40 step, an RGBA image's size.
        let decoded = try records.map(TFEventReader.event)
        #expect(decoded[0].fileVersion == "brain.Event:2" && decoded[0].step == 0 && decoded[0].wallTime == 1712345678.5)
        #expect(decoded[1].sessionStart && decoded[1].step == 5 && decoded[1].values.isEmpty && !decoded[0].sessionStart)
        #expect(decoded[7].step == 1 << 40 && decoded[7].values == [.init(tag: "train/loss", simple: 65504)])
        #expect(decoded[9].values.first?.image.map { [$0.height, $0.width, $0.colorspace] } == [5, 11, 4])
    }

    @Test func imageEventsRefuseWhatIsNotAPNG() throws {
        #expect(throws: HasteError.fileFormat(path: "x.jpg", detail: "not a PNG (no signature and IHDR chunk in the first 26 bytes)")) {
            try TensorBoardEvent.image(tag: "t", png: [0xFF, 0xD8] + [UInt8](repeating: 0, count: 40), step: 1, wallTime: 1, path: "x.jpg")
        }
    }
}
