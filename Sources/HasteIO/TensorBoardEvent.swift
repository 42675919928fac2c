import HasteTensor

/// TensorBoard `Event` protocol buffers (tensorboard/compat/proto/event.proto, summary.proto; proto3), encoded
/// by hand: the few fields haste writes, each skipped at its default value as protobuf does (the oneof members
/// `file_version`, `summary` and `simple_value` are written even then), in field-number order. Wrapped in
/// `TFRecord.frame` they make an `events.out.tfevents.*` file that `tensorboard --logdir` reads.
///
///     Event   { double wall_time = 1; int64 step = 2;
///               oneof what { string file_version = 3; Summary summary = 5; SessionLog session_log = 7; }
///               SourceMetadata source_metadata = 10; }
///     SessionLog { enum SessionStatus { STATUS_UNSPECIFIED = 0; START = 1; … } SessionStatus status = 1; }
///     Summary { repeated Value value = 1; }
///     Value   { string tag = 1; oneof value { float simple_value = 2; Image image = 4; } }
///     Image   { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
public enum TensorBoardEvent {
    /// The first record of every event file.
    public static let fileVersion = "brain.Event:2"

    /// The file's first event: its version, and the program that wrote it (`SourceMetadata.writer`).
    public static func header(wallTime: Double, writer: String = "haste") -> [UInt8] {
        var e = start(wallTime: wallTime, step: 0)
        e.string(3, fileVersion)
        if !writer.isEmpty {
            var source = ProtoWriter()
            source.string(1, writer)
            e.bytes(10, source.bytes)
        }
        return e.bytes
    }

    /// `SessionLog.START` at `step`: a job (re)started here. TensorBoard's EventAccumulator drops the events it has
    /// read with steps ≥ `step` (those a resumed run writes again), as for a TensorFlow job restarted from a checkpoint.
    public static func sessionStart(step: Int, wallTime: Double) -> [UInt8] {
        var e = start(wallTime: wallTime, step: step)
        var log = ProtoWriter()
        log.int(1, 1)
        e.bytes(7, log.bytes)
        return e.bytes
    }

    /// One event holding a `simple_value` per tag, in the order given.
    public static func scalars(_ values: [(tag: String, value: Float)], step: Int, wallTime: Double) -> [UInt8] {
        summary(values.map { tag, value in
            var v = ProtoWriter()
            if !tag.isEmpty { v.string(1, tag) }
            v.float(2, value)
            return v.bytes
        }, step: step, wallTime: wallTime)
    }

    /// One event holding an encoded PNG; height, width and colorspace (channels: 1 grey, 2 grey + alpha, 3 RGB,
    /// 4 RGBA) come from its IHDR chunk. `path` names the image in errors.
    public static func image(tag: String, png: [UInt8], step: Int, wallTime: Double, path: String) throws -> [UInt8] {
        let header = try PNGHeader(png, path: path)
        var image = ProtoWriter()
        if header.height != 0 { image.int(1, Int64(header.height)) }
        if header.width != 0 { image.int(2, Int64(header.width)) }
        image.int(3, Int64(header.channels))
        if !png.isEmpty { image.bytes(4, png) }
        var v = ProtoWriter()
        if !tag.isEmpty { v.string(1, tag) }
        v.bytes(4, image.bytes)
        return summary([v.bytes], step: step, wallTime: wallTime)
    }

    static func start(wallTime: Double, step: Int) -> ProtoWriter {
        var e = ProtoWriter()
        if wallTime.bitPattern != 0 { e.double(1, wallTime) }
        if step != 0 { e.int(2, Int64(step)) }
        return e
    }

    static func summary(_ values: [[UInt8]], step: Int, wallTime: Double) -> [UInt8] {
        var s = ProtoWriter()
        for v in values { s.bytes(1, v) }
        var e = start(wallTime: wallTime, step: step)
        e.bytes(5, s.bytes)
        return e.bytes
    }
}

/// Width, height and channel count from a PNG's signature and IHDR chunk (the first 26 bytes).
struct PNGHeader {
    let width: Int, height: Int, channels: Int

    init(_ png: [UInt8], path: String) throws {
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        guard png.count >= 26, Array(png[0..<8]) == signature, Array(png[12..<16]) == Array("IHDR".utf8) else {
            throw HasteError.fileFormat(path: path, detail: "not a PNG (no signature and IHDR chunk in the first 26 bytes)")
        }
        func be32(_ i: Int) -> Int { png[i..<(i + 4)].reduce(0) { $0 << 8 | Int($1) } }
        (width, height) = (be32(16), be32(20))
        let byType: [UInt8: Int] = [0: 1, 4: 2, 2: 3, 6: 4, 3: 3]           // colour type → channels (palette: RGB)
        guard let c = byType[png[25]] else {
            throw HasteError.fileFormat(path: path, detail: "PNG colour type \(png[25]) is not one of 0, 2, 3, 4, 6")
        }
        channels = c
    }
}
