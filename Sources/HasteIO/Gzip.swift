import CZlib
import Foundation
import HasteTensor

/// gzip/zlib inflation (Fashion-MNIST ships as .gz idx files).
public enum Gzip {
    public static func decompress(file path: String) throws -> Data {
        guard let compressed = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "Install it (Scripts/setup.sh) or check the path.")
        }
        return try decompress(compressed, name: path)
    }

    public static func decompress(_ data: Data, name: String) throws -> Data {
        var stream = z_stream()
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw HasteError.fileFormat(path: name, detail: "zlib initialisation failed")
        }
        defer { inflateEnd(&stream) }
        var out = Data()
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var status: Int32 = Z_OK
        try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: UInt8.self).baseAddress)
            stream.avail_in = UInt32(input.count)
            repeat {
                try buffer.withUnsafeMutableBufferPointer { b in
                    stream.next_out = b.baseAddress
                    stream.avail_out = UInt32(chunk)
                    status = inflate(&stream, Z_NO_FLUSH)
                    guard status == Z_OK || status == Z_STREAM_END else {
                        throw HasteError.fileFormat(path: name, detail: "corrupt gzip data (zlib status \(status))")
                    }
                    out.append(b.baseAddress!, count: chunk - Int(stream.avail_out))
                }
                if status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0 {
                    throw HasteError.fileFormat(path: name, detail: "truncated gzip data")
                }
            } while status != Z_STREAM_END
        }
        return out
    }
}
