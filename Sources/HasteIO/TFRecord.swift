/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as TFRecord files use it: not zlib's CRC-32, whose
/// polynomial differs, so it cannot come from the system zlib.
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { (n: Int) -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    /// The checksum of `bytes` ("123456789" → 0xE3069283).
    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { crc = t[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        }
        return ~crc
    }

    /// TensorFlow's masked form, ((crc >> 15) | (crc << 17)) + 0xa282ead8: a CRC stored beside the data it covers
    /// would otherwise checksum to a constant when the whole is checksummed again.
    public static func masked<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        let crc = checksum(bytes)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}

/// TFRecord framing (TensorFlow's record_writer, TensorBoard's event files): little-endian
/// `uint64 length, uint32 masked_crc32c(length bytes), data, uint32 masked_crc32c(data)`.
public enum TFRecord {
    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        let header = littleEndian(UInt64(payload.count))
        return header + littleEndian(CRC32C.masked(header)) + payload + littleEndian(CRC32C.masked(payload))
    }

    static func littleEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) }
    }
}

/// Protocol-buffer wire encoding, just what TensorBoard's `Event` needs: fields are appended in the order
/// called (callers go by field number, as protobuf's own serializers do).
public struct ProtoWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }

    mutating func key(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

    /// int64/int32/uint32/enum (wire type 0); negative numbers take ten bytes, as in protobuf.
    public mutating func int(_ field: Int, _ value: Int64) { key(field, 0); varint(UInt64(bitPattern: value)) }
    public mutating func double(_ field: Int, _ value: Double) { key(field, 1); bytes += TFRecord.littleEndian(value.bitPattern) }
    public mutating func float(_ field: Int, _ value: Float) { key(field, 5); bytes += TFRecord.littleEndian(value.bitPattern) }
    /// bytes, string and embedded messages (wire type 2).
    public mutating func bytes(_ field: Int, _ value: [UInt8]) { key(field, 2); varint(UInt64(value.count)); bytes += value }
    public mutating func string(_ field: Int, _ value: String) { bytes(field, Array(value.utf8)) }
}
