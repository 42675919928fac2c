import HasteTensor

/// Reads `.npz` archives (`np.savez`, ours, the ADM reference batches): a mapped zip whose members are stored
/// `.npy` files, ZIP64 records included (spec/evaluation.md §3). Arrays are read whole or as a range of rows
/// along axis 0, so a 50 000-image batch is streamed in pieces without copying the file.
public final class NpzFile {
    /// One array: its npy header and where its data lies in the file.
    public struct Entry {
        public let key: String
        public let header: NpyHeader
        /// File offset of the first data byte.
        public let dataOffset: Int
    }

    public let path: String
    /// In the archive's order.
    public let entries: [Entry]
    private let file: MappedFile

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path, kind: "a .npz archive")
        entries = try NpzFile.parse(file.bytes, path: path)
    }

    /// Keys as numpy shows them (member names without `.npy`).
    public var keys: [String] { entries.map(\.key) }

    public func entry(_ key: String) throws -> Entry {
        guard let a = entries.first(where: { $0.key == key }) else {
            throw HasteError.fileFormat(path: path, detail: "no array '\(key)' (the archive holds \(keys.joined(separator: ", ")))")
        }
        return a
    }

    /// The whole array as a contiguous CPU tensor.
    public func tensor(_ key: String) throws -> Tensor {
        let a = try entry(key)
        return try tensor(key, rows: 0..<(a.header.shape.first ?? 1))
    }

    /// Rows `rows` along axis 0 (e.g. images 64..<128 of an [N, H, W, 3] batch); a 0-d array has one row.
    public func tensor(_ key: String, rows: Range<Int>) throws -> Tensor {
        let a = try entry(key), h = a.header
        let total = h.shape.first ?? 1
        require(rows.lowerBound >= 0 && rows.upperBound <= total, "NpzFile.tensor: rows \(rows) of \(total) in '\(key)'")
        let rowBytes = total == 0 ? 0 : h.byteCount / total
        let shape = h.shape.isEmpty ? [] : [rows.count] + h.shape.dropFirst()
        let t = Tensor.empty(shape, dtype: h.dtype)
        let n = rows.count * rowBytes
        if n > 0 {
            t.backend.copyFromHost(file.bytes.baseAddress! + a.dataOffset + rows.lowerBound * rowBytes, to: t.buffer, byteCount: n)
        }
        return t
    }

    /// End record (ZIP64 if flagged) → central directory → each member's local header → its npy header.
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> [Entry] {
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: "not a valid .npz archive: \(detail)") }
        func u(_ at: Int, _ size: Int) throws -> UInt64 {
            guard at >= 0, at + size <= bytes.count else { throw bad("record at byte \(at) runs past the end of the file (truncated?)") }
            return bytes.littleEndianInteger(at: at, size: size)
        }
        // The end record is the last 22 bytes plus a comment of up to 65 535 bytes.
        var eocd = -1
        for at in stride(from: bytes.count - 22, through: max(0, bytes.count - 22 - 65_535), by: -1) where try u(at, 4) == 0x0605_4B50 {
            eocd = at
            break
        }
        guard eocd >= 0 else { throw bad("no end-of-central-directory record (not a zip file, or truncated)") }
        var count = try u(eocd + 10, 2), directoryOffset = try u(eocd + 16, 4)
        if count == 0xFFFF || directoryOffset == 0xFFFF_FFFF, eocd >= 20, try u(eocd - 20, 4) == 0x0706_4B50 {
            let record = Int(try u(eocd - 20 + 8, 8))
            guard try u(record, 4) == 0x0606_4B50 else { throw bad("ZIP64 end record missing where its locator points") }
            count = try u(record + 32, 8)
            directoryOffset = try u(record + 48, 8)
        }
        var out: [Entry] = []
        var at = Int(directoryOffset)
        for _ in 0..<count {
            guard try u(at, 4) == 0x0201_4B50 else { throw bad("central directory entry missing at byte \(at)") }
            let method = try u(at + 10, 2), nameLength = Int(try u(at + 28, 2))
            let extraLength = Int(try u(at + 30, 2)), commentLength = Int(try u(at + 32, 2))
            var size = try u(at + 24, 4), offset = try u(at + 42, 4)
            guard at + 46 + nameLength <= bytes.count else { throw bad("entry name runs past the end of the file") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(at + 46)..<(at + 46 + nameLength)]), as: UTF8.self)
            try readZip64(at: at + 46 + nameLength, length: extraLength, size: &size, offset: &offset, u)
            at += 46 + nameLength + extraLength + commentLength
            guard method == 0 else {
                throw bad("member '\(name)' is compressed (np.savez_compressed); haste reads stored archives: re-save with np.savez")
            }
            let local = Int(offset)
            guard try u(local, 4) == 0x0403_4B50 else { throw bad("local header of '\(name)' missing at byte \(local)") }
            let start = local + 30 + Int(try u(local + 26, 2)) + Int(try u(local + 28, 2))
            guard start + Int(size) <= bytes.count else { throw bad("member '\(name)' runs past the end of the file (truncated?)") }
            let member = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + Int(size))])
            let header = try NpyHeader.parse(member, path: "\(path)[\(name)]")
            guard header.dataOffset + header.byteCount == Int(size) else {
                throw bad("member '\(name)' holds \(Int(size) - header.dataOffset) data bytes for \(header.descr) \(header.shape)")
            }
            guard !header.fortranOrder || header.shape.count < 2, !header.isBigEndian else {
                throw bad("member '\(name)' is Fortran-ordered or big-endian; re-save it with np.savez(np.ascontiguousarray(a))")
            }
            let key = name.hasSuffix(".npy") ? String(name.dropLast(4)) : name
            out.append(Entry(key: key, header: header, dataOffset: start + header.dataOffset))
        }
        return out
    }

    /// Replaces 0xFFFFFFFF sizes and offsets by the ZIP64 extra field's values (in the order size,
    /// compressed size, offset; only those that overflowed are present).
    private static func readZip64(at start: Int, length: Int, size: inout UInt64, offset: inout UInt64,
                                  _ u: (Int, Int) throws -> UInt64) throws {
        var at = start
        while at + 4 <= start + length {
            let id = try u(at, 2), n = Int(try u(at + 2, 2))
            if id == 1 {
                var field = at + 4
                if size == 0xFFFF_FFFF { size = try u(field, 8); field += 16 }   // uncompressed, then compressed
                if offset == 0xFFFF_FFFF { offset = try u(field, 8) }
            }
            at += 4 + n
        }
    }
}

