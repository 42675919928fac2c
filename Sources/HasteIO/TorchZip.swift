#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CZlib
import HasteTensor

/// Bytes of one stored record inside a mapped file: a zip entry, or a storage of a legacy torch file.
/// `method` 0 = stored (the bytes are the data), 8 = deflate.
struct FileSpan {
    let file: MappedFile
    /// What the error messages call it: "archive/data/3".
    let name: String
    let offset: Int
    let storedSize: Int
    let size: Int
    let method: UInt16
    let crc: UInt32?

    /// Writes the `size` data bytes to `destination` (a copy, or inflation). `verify` checks the CRC-32, which
    /// `torch.save` writes for every entry; deflated data are always checked (raw deflate carries no checksum).
    func read(into destination: UnsafeMutableRawPointer, verify: Bool) throws {
        let source = file.bytes.baseAddress! + offset
        switch method {
        case 0: if size > 0 { destination.copyMemory(from: source, byteCount: size) }
        case 8: try inflateRaw(from: source, into: destination)
        default: throw fail("compression method \(method) is not supported (torch writes entries stored, method 0)")
        }
        if let crc, verify || method == 8 {
            let actual = FileSpan.crc32(UnsafeRawPointer(destination), size)
            if actual != crc { throw fail("CRC-32 mismatch (stored \(hex(crc)), computed \(hex(actual))): the file is corrupt") }
        }
    }

    /// The data as an array (for pickles: small).
    func bytes(verify: Bool) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            if size > 0 { try read(into: UnsafeMutableRawPointer(buffer.baseAddress!), verify: verify) }
            initialized = size
        }
    }

    /// Lets the kernel drop the mapped pages of a stored span once it has been copied, so a big checkpoint
    /// is not resident twice (the mapping and the tensors); pages fault back in from the file if read again.
    func dropPages() {
        guard method == 0, size > 0, let base = file.bytes.baseAddress else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: base) + offset + page - 1) / page * page
        let end = (Int(bitPattern: base) + offset + size) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_DONTNEED) }
    }

    func fail(_ detail: String) -> HasteError { .fileFormat(path: file.path, detail: "entry '\(name)': \(detail)") }

    private func inflateRaw(from source: UnsafeRawPointer, into destination: UnsafeMutableRawPointer) throws {
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw fail("zlib initialisation failed")
        }
        defer { inflateEnd(&stream) }
        stream.next_in = UnsafeMutablePointer(mutating: source.assumingMemoryBound(to: UInt8.self))
        stream.next_out = destination.assumingMemoryBound(to: UInt8.self)
        var inLeft = storedSize, outLeft = size
        var status: Int32 = Z_OK
        repeat {   // zlib counts in 32 bits: hand both sides over in slices
            if stream.avail_in == 0 { let n = min(inLeft, 1 << 30); stream.avail_in = UInt32(n); inLeft -= n }
            if stream.avail_out == 0 { let n = min(outLeft, 1 << 30); stream.avail_out = UInt32(n); outLeft -= n }
            status = inflate(&stream, Z_NO_FLUSH)
        } while status == Z_OK
        guard status == Z_STREAM_END else { throw fail("corrupt or truncated deflate data (zlib status \(status))") }
        if Int(stream.total_out) != size {
            throw fail("inflates to \(stream.total_out) bytes, the directory declares \(size)")
        }
    }

    /// zlib's CRC-32 of `count` bytes (in 1 GiB pieces: zlib takes a 32-bit length), continuing from `seed`.
    static func crc32(_ pointer: UnsafeRawPointer, _ count: Int, seed: UInt32 = 0) -> UInt32 {
        var crc = uLong(seed), done = 0
        let p = pointer.assumingMemoryBound(to: UInt8.self)
        while done < count {
            let n = min(count - done, 1 << 30)
            crc = CZlib.crc32(crc, p + done, uInt(n))
            done += n
        }
        return UInt32(truncatingIfNeeded: crc)
    }
}

private func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }

/// A zip archive read through its central directory (PKWARE APPNOTE 6.3, ZIP64 included), as `torch.save`
/// (torch ≥ 1.6) and `torch.jit.save` write it: one folder, entries stored and 64-byte aligned. Every offset
/// and length is checked against the file before use, so a truncated or damaged archive is a thrown error.
final class TorchZip {
    let file: MappedFile
    /// Entries in central-directory order.
    let entries: [FileSpan]
    private let index: [String: Int]

    var path: String { file.path }

    static let localMagic: [UInt8] = [0x50, 0x4B, 0x03, 0x04]

    static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 4 && Array(bytes[0..<4]) == localMagic
    }

    init(file: MappedFile) throws {
        self.file = file
        let b = file.bytes
        func bad(_ detail: String) -> HasteError { .fileFormat(path: file.path, detail: "not a valid zip archive: \(detail)") }
        let (count, cdStart, cdSize) = try TorchZip.directoryLocation(b, bad)
        var spans: [FileSpan] = [], index: [String: Int] = [:]
        var at = cdStart
        for i in 0..<count {
            guard at + 46 <= cdStart + cdSize, b.u32(at) == 0x0201_4B50 else {
                throw bad("central directory record \(i) of \(count) at byte \(at) is missing or damaged (truncated file?)")
            }
            let span = try TorchZip.entry(b, at: &at, limit: cdStart + cdSize, file: file, bad)
            guard index[span.name] == nil else { throw bad("entry '\(span.name)' appears twice") }
            index[span.name] = spans.count
            spans.append(span)
        }
        entries = spans
        self.index = index
    }

    func entry(_ name: String) -> FileSpan? { index[name].map { entries[$0] } }

    /// (entry count, central directory offset, size) from the end-of-central-directory record, or its ZIP64 form.
    private static func directoryLocation(_ b: UnsafeRawBufferPointer, _ bad: (String) -> HasteError) throws -> (Int, Int, Int) {
        guard b.count >= 22 else { throw bad("\(b.count) bytes, too short for a zip archive (truncated file?)") }
        var eocd = -1
        for i in stride(from: b.count - 22, through: max(0, b.count - 22 - 65_535), by: -1) where b.u32(i) == 0x0605_4B50 {
            if i + 22 + Int(b.u16(i + 20)) <= b.count { eocd = i; break }
        }
        guard eocd >= 0 else { throw bad("no end-of-central-directory record (truncated file?)") }
        var count = Int(b.u16(eocd + 10)), size = Int(b.u32(eocd + 12)), start = Int(b.u32(eocd + 16))
        if eocd >= 20 && b.u32(eocd - 20) == 0x0706_4B50 {
            let at64 = b.u64(eocd - 12)
            guard eocd >= 76, at64 <= UInt64(eocd - 76), b.u32(Int(at64)) == 0x0606_4B50 else {
                throw bad("the ZIP64 end-of-central-directory locator points at byte \(at64), where no ZIP64 record is")
            }
            let r = Int(at64)
            guard b.u64(r + 32) <= UInt64(Int.max), b.u64(r + 40) <= UInt64(Int.max), b.u64(r + 48) <= UInt64(Int.max) else {
                throw bad("ZIP64 record holds impossible sizes")
            }
            (count, size, start) = (Int(b.u64(r + 32)), Int(b.u64(r + 40)), Int(b.u64(r + 48)))
        }
        guard start <= b.count, size <= b.count - start, count <= size / 46 else {
            throw bad("central directory (\(count) entries, \(size) bytes at \(start)) does not fit the \(b.count)-byte file (truncated file?)")
        }
        return (count, start, size)
    }

    /// One central-directory record at `at` (advanced past it), with its data located through the local header.
    private static func entry(_ b: UnsafeRawBufferPointer, at: inout Int, limit: Int, file: MappedFile,
                              _ bad: (String) -> HasteError) throws -> FileSpan {
        let flags = b.u16(at + 8), method = b.u16(at + 10), crc = b.u32(at + 16)
        var stored = UInt64(b.u32(at + 20)), size = UInt64(b.u32(at + 24)), local = UInt64(b.u32(at + 42))
        let nameLength = Int(b.u16(at + 28)), extraLength = Int(b.u16(at + 30)), commentLength = Int(b.u16(at + 32))
        let end = at + 46 + nameLength + extraLength + commentLength
        guard end <= limit else { throw bad("central directory record at byte \(at) runs past the directory") }
        let name = String(decoding: b[(at + 46)..<(at + 46 + nameLength)], as: UTF8.self)
        if flags & 1 != 0 { throw bad("entry '\(name)' is encrypted") }
        // ZIP64 extra field (id 1): the 64-bit values of the fields saturated at 0xFFFFFFFF, in this order.
        var e = at + 46 + nameLength
        while e + 4 <= at + 46 + nameLength + extraLength {
            let id = b.u16(e), length = Int(b.u16(e + 2))
            guard e + 4 + length <= at + 46 + nameLength + extraLength else { break }
            if id == 1 {
                var f = e + 4
                for field in [0, 1, 2] {
                    let saturated = field == 0 ? size == 0xFFFF_FFFF : field == 1 ? stored == 0xFFFF_FFFF : local == 0xFFFF_FFFF
                    guard saturated else { continue }
                    guard f + 8 <= e + 4 + length else { throw bad("entry '\(name)': ZIP64 extra field too short") }
                    if field == 0 { size = b.u64(f) } else if field == 1 { stored = b.u64(f) } else { local = b.u64(f) }
                    f += 8
                }
            }
            e += 4 + length
        }
        at = end
        let fileSize = UInt64(b.count)
        guard local <= fileSize, local + 30 <= fileSize, b.u32(Int(local)) == 0x0403_4B50 else {
            throw bad("entry '\(name)': no local header at byte \(local) (truncated file?)")
        }
        let data = Int(local) + 30 + Int(b.u16(Int(local) + 26)) + Int(b.u16(Int(local) + 28))
        guard stored <= fileSize, UInt64(data) + stored <= fileSize else {
            throw bad("entry '\(name)': \(stored) bytes at byte \(data) run past the end of the \(b.count)-byte file (truncated file?)")
        }
        if method == 0 && stored != size { throw bad("entry '\(name)' is stored but declares \(size) bytes in \(stored)") }
        // Deflate expands at most ~1032×: a larger claim is a damaged header, not data.
        if method != 0 && size > stored &* 1032 + 64 { throw bad("entry '\(name)' claims \(size) bytes from \(stored) compressed") }
        return FileSpan(file: file, name: name, offset: data, storedSize: Int(stored), size: Int(size), method: method, crc: crc)
    }
}

extension UnsafeRawBufferPointer {
    func u16(_ at: Int) -> UInt16 { UInt16(littleEndianInteger(at: at, size: 2)) }
    func u32(_ at: Int) -> UInt32 { UInt32(littleEndianInteger(at: at, size: 4)) }
    func u64(_ at: Int) -> UInt64 { littleEndianInteger(at: at, size: 8) }
}
