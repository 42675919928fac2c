#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CZlib
import HasteTensor

/// numpy's `.npz` (`np.savez`): a zip archive of uncompressed ("stored") `<key>.npy` members (spec/evaluation.md
/// §3). Writes stream: a member's bytes can be appended piece by piece (the ADM batch of 50 000 × 256 × 256 × 3
/// = 9.8 GB is never held in memory). ZIP64 records are emitted when a size or offset reaches 4 GiB or there
/// are more than 65 534 members, as Python's zipfile does; the archive goes to a temporary sibling and is
/// renamed into place by `finish()`, so a reader never sees half an archive. Timestamps are fixed
/// (1980-01-01 00:00), so equal arrays give byte-identical files.
public final class NpzWriter {
    public let path: String
    private let temporary: String
    private var fd: Int32
    private var position: UInt64 = 0
    private var members: [ZipMember] = []
    private var current: (member: ZipMember, headerOffset: UInt64, remaining: UInt64, crc: UInt32)?
    private var finished = false
    /// Sizes and offsets from here on get ZIP64 fields (tests lower it to exercise ZIP64 on small files).
    let zip64Threshold: UInt64

    public convenience init(path: String) throws { try self.init(path: path, zip64Threshold: 0xFFFF_FFFF) }

    package init(path: String, zip64Threshold: UInt64) throws {
        self.path = path
        self.zip64Threshold = zip64Threshold
        temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot create \(temporary): \(MappedFile.message(errno)) (check that the folder exists and is writable)")
        }
    }

    deinit {
        if !finished {
            if fd >= 0 { close(fd) }
            unlink(temporary)
        }
    }

    /// Writes the whole of `tensor` (any device, any layout) as member `<key>.npy`.
    public func add(_ key: String, _ tensor: Tensor) throws {
        let c = tensor.to(.cpu).contiguous()
        try beginArray(key, dtype: c.dtype, shape: c.shape)
        try append(c)
    }

    /// Starts member `<key>.npy` holding a C-order array of `dtype` and `shape`; its data follows through
    /// `append` calls totalling exactly the array's byte count.
    public func beginArray(_ key: String, dtype: DType, shape: [Int]) throws {
        require(current == nil, "NpzWriter: member '\(current!.member.name)' is still incomplete (\(current!.remaining) bytes missing)")
        require(!finished, "NpzWriter: archive \(path) is already finished")
        guard let header = NpyHeader.encode(dtype: dtype, shape: shape) else {
            throw HasteError.fileFormat(path: path, detail: "numpy has no \(dtype); convert with .to(.float32) before writing .npz")
        }
        let name = key + ".npy"
        require(!members.contains { $0.name == name }, "NpzWriter: key '\(key)' written twice to \(path)")
        let size = UInt64(header.count) + UInt64(shape.reduce(1, *) * dtype.byteSize)
        let member = ZipMember(name: name, size: size, crc: 0, offset: position, limit: zip64Threshold)
        let local = member.localHeader(alignedAt: position)
        try write(local)
        current = (member, member.offset, size, 0)
        try append(bytes: header)
    }

    /// Appends the elements of `tensor` (contiguous CPU copy taken here) to the open member.
    public func append(_ tensor: Tensor) throws {
        let c = tensor.to(.cpu).contiguous()
        let n = c.count * c.dtype.byteSize
        if n > 0 { try append(UnsafeRawBufferPointer(start: c.buffer.rawPointer, count: n)) }
        withExtendedLifetime(c) {}
    }

    public func append(bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append($0) }
    }

    /// Appends raw bytes to the open member; the member is closed (its CRC patched in) once complete.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard var o = current else { fatalError("NpzWriter.append: no member open (call beginArray first)") }
        require(UInt64(bytes.count) <= o.remaining,
                     "NpzWriter.append: \(bytes.count) bytes overrun member '\(o.member.name)' (\(o.remaining) left)")
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        o.crc = FileSpan.crc32(base, bytes.count, seed: o.crc)
        try write(bytes)
        o.remaining -= UInt64(bytes.count)
        current = o
        if o.remaining == 0 { try closeMember() }
    }

    /// Writes the central directory, syncs and renames the archive into place.
    public func finish() throws {
        require(current == nil, "NpzWriter.finish: member '\(current!.member.name)' is incomplete (\(current!.remaining) bytes missing)")
        require(!finished, "NpzWriter.finish: called twice for \(path)")
        let directoryOffset = position
        for m in members { try write(m.centralHeader()) }
        try write(ZipMember.endRecords(count: members.count, directoryOffset: directoryOffset,
                                       directorySize: position - directoryOffset, limit: zip64Threshold))
        guard fsync(fd) == 0 else { throw failure("fsync failed") }
        let closed = close(fd)
        fd = -1
        guard closed == 0 else { throw failure("close failed") }
        guard rename(temporary, path) == 0 else { throw failure("cannot rename \(temporary) into place") }
        finished = true
    }

    private func closeMember() throws {
        guard let o = current else { return }
        var m = o.member
        m.crc = o.crc
        var le = m.crc.littleEndian
        // The CRC field sits 14 bytes into the local header; sizes were known up front.
        let written = withUnsafeBytes(of: &le) { pwrite(fd, $0.baseAddress, 4, off_t(o.headerOffset + 14)) }
        guard written == 4 else { throw failure("cannot patch the CRC of \(m.name)") }
        members.append(m)
        current = nil
    }

    private func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    private func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n = posixWrite(fd, base + done, min(bytes.count - done, 1 << 30))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw failure("write failed") }
            done += n
        }
        position += UInt64(bytes.count)
    }

    private func failure(_ what: String) -> HasteError {
        .fileFormat(path: path, detail: "\(what): \(MappedFile.message(errno)) (check free disk space and permissions)")
    }
}

extension NpzWriter {
    /// Writes `arrays` as one archive (np.savez(path, **arrays), keys in the given order).
    public static func write(_ arrays: [(String, Tensor)], to path: String) throws {
        let w = try NpzWriter(path: path)
        for (key, t) in arrays { try w.add(key, t) }
        try w.finish()
    }
}

/// One stored zip member and the records that describe it (PKWARE APPNOTE 6.3: §4.3.7 local header,
/// §4.3.12 central header, §4.5.3 ZIP64 extra field, §4.3.14–16 end records).
struct ZipMember {
    let name: String
    let size: UInt64
    var crc: UInt32
    let offset: UInt64              // of the local header
    /// Sizes and offsets at or past 4 GiB − 1 need ZIP64 fields (Python's zipfile uses the same limit).
    let limit: UInt64

    var needsZip64Size: Bool { size >= limit }
    var needsZip64Offset: Bool { offset >= limit }
    static let dosDate: UInt16 = 0x21, dosTime: UInt16 = 0       // 1980-01-01 00:00: reproducible bytes

    /// The local header. Its extra field pads the header so the member's data starts at a 64-byte file
    /// offset; the npy header is a multiple of 64 bytes too, so the array itself is aligned for mmap readers.
    func localHeader(alignedAt start: UInt64) -> [UInt8] {
        var zip64: [UInt8] = []
        if needsZip64Size { zip64 = le(UInt16(1)) + le(UInt16(16)) + le(size) + le(size) }
        let fixed = 30 + name.utf8.count + zip64.count
        var pad = Int((64 - (start + UInt64(fixed)) % 64) % 64)
        if pad > 0 && pad < 4 { pad += 64 }                         // an extra block needs a 4-byte header
        let padding = pad == 0 ? [] : le(UInt16(0x6168)) + le(UInt16(pad - 4)) + [UInt8](repeating: 0, count: pad - 4)
        let extra = zip64 + padding
        let size32 = needsZip64Size ? UInt32.max : UInt32(size)
        return le(UInt32(0x0403_4B50)) + le(UInt16(needsZip64Size ? 45 : 20)) + le(UInt16(0)) + le(UInt16(0))
            + le(ZipMember.dosTime) + le(ZipMember.dosDate) + le(UInt32(0)) + le(size32) + le(size32)
            + le(UInt16(name.utf8.count)) + le(UInt16(extra.count)) + Array(name.utf8) + extra
    }

    func centralHeader() -> [UInt8] {
        var fields: [UInt8] = []
        if needsZip64Size { fields += le(size) + le(size) }
        if needsZip64Offset { fields += le(offset) }
        let extra = fields.isEmpty ? [] : le(UInt16(1)) + le(UInt16(fields.count)) + fields
        let version = UInt16(needsZip64Size || needsZip64Offset ? 45 : 20)
        let size32 = needsZip64Size ? UInt32.max : UInt32(size)
        return le(UInt32(0x0201_4B50)) + le(version | 3 << 8) + le(version) + le(UInt16(0)) + le(UInt16(0))
            + le(ZipMember.dosTime) + le(ZipMember.dosDate) + le(crc) + le(size32) + le(size32)
            + le(UInt16(name.utf8.count)) + le(UInt16(extra.count)) + le(UInt16(0)) + le(UInt16(0)) + le(UInt16(0))
            + le(UInt32(0o100644) << 16) + le(needsZip64Offset ? UInt32.max : UInt32(offset)) + Array(name.utf8) + extra
    }

    /// ZIP64 end record and locator when needed, then the classic end record.
    static func endRecords(count: Int, directoryOffset: UInt64, directorySize: UInt64, limit: UInt64) -> [UInt8] {
        let zip64 = count >= min(0xFFFF, limit) || directoryOffset >= limit || directorySize >= limit
        var out: [UInt8] = []
        if zip64 {
            let recordOffset = directoryOffset + directorySize
            out += le(UInt32(0x0606_4B50)) + le(UInt64(44)) + le(UInt16(45 | 3 << 8)) + le(UInt16(45))
                + le(UInt32(0)) + le(UInt32(0)) + le(UInt64(count)) + le(UInt64(count)) + le(directorySize) + le(directoryOffset)
            out += le(UInt32(0x0706_4B50)) + le(UInt32(0)) + le(recordOffset) + le(UInt32(1))
        }
        let count16 = zip64 ? UInt16.max : UInt16(count)
        out += le(UInt32(0x0605_4B50)) + le(UInt16(0)) + le(UInt16(0)) + le(count16) + le(count16)
            + le(zip64 ? UInt32.max : UInt32(directorySize)) + le(zip64 ? UInt32.max : UInt32(directoryOffset)) + le(UInt16(0))
        return out
    }
}

/// POSIX write(2), named apart from the writer's own `write` methods.
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { write(fd, bytes, count) }

/// Little-endian bytes of a fixed-width integer.
fileprivate func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
