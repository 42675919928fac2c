import HasteTensor

/// numpy's `.npz` archives, the one reader (`np.savez`, `np.savez_compressed`, ours from `NpzWriter`, the ADM
/// reference batches; spec/evaluation.md §3): a zip (ZIP64 for members over 4 GiB, parsed by `TorchZip`) of
/// `<key>.npy` members, stored or deflated, C or Fortran order. ADM's sample and reference batches are npz files
/// whose `arr_0` (uint8 [N, H, W, 3]) can exceed 9 GB, so besides whole arrays this reads rows of the leading
/// axis straight from the mapped file (`rows`), a batch at a time. Either byte order.
public final class NpzArchive {
    public let path: String
    /// Member names without ".npy", in archive order.
    public let keys: [String]
    private let zip: TorchZip
    private var inflated: [String: [UInt8]] = [:]

    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path, kind: "a numpy .npz archive")
        guard TorchZip.looksLikeZip(file.bytes) else {
            throw HasteError.fileFormat(path: path, detail: "not a .npz archive (no zip signature); np.savez writes one")
        }
        do { zip = try TorchZip(file: file) } catch HasteError.fileFormat(_, let detail) {
            throw HasteError.fileFormat(path: path, detail: "not a valid .npz archive (\(detail))")
        }
        keys = zip.entries.map(\.name).filter { $0.hasSuffix(".npy") }.map { String($0.dropLast(4)) }
    }

    /// Every array of `path`, keyed by name (numpy's `dict(np.load(path))`).
    public static func read(_ path: String) throws -> [String: Tensor] {
        let npz = try NpzArchive(path: path)
        var out: [String: Tensor] = [:]
        for key in npz.keys { out[key] = try npz.tensor(key) }
        return out
    }

    public func contains(_ key: String) -> Bool { zip.entry(key + ".npy") != nil }

    /// The member's header (dtype, shape), without reading its data.
    public func header(_ key: String) throws -> NpyHeader { try withMember(key) { h, _ in h } }

    /// File offset of the member's first data byte when it is stored (nil when deflated): `NpzWriter` aligns it
    /// to 64 bytes so that mapped arrays are aligned.
    public func dataOffset(_ key: String) throws -> Int? {
        guard let span = zip.entry(key + ".npy"), span.method == 0 else { return nil }
        return try withMember(key) { _, data in data - UnsafeRawPointer(zip.file.bytes.baseAddress!) }
    }

    /// The whole array as a contiguous CPU tensor in C order.
    public func tensor(_ key: String) throws -> Tensor {
        try withMember(key) { h, data in h.tensor(from: data) }
    }

    /// Rows `range` of the leading axis, [range.count] + shape[1...], copied from the archive (no full read
    /// for stored members; a Fortran-order array is read whole first).
    public func rows(_ key: String, _ range: Range<Int>) throws -> Tensor {
        let h = try header(key)
        guard h.shape.count >= 1, range.lowerBound >= 0, range.upperBound <= h.shape[0] else {
            throw HasteError.fileFormat(path: path, detail: "'\(key)': rows \(range) of an array shaped \(h.shape)")
        }
        if h.fortranOrder { return try tensor(key).narrowed(0, start: range.lowerBound, length: range.count).contiguous() }
        // Fits: the whole array's byte count was checked when the header was parsed.
        let rowBytes = h.shape[0] == 0 ? 0 : h.byteCount / h.shape[0]
        return try withMember(key) { h, data in
            let t = Tensor.empty([range.count] + h.shape.dropFirst(), dtype: h.dtype)
            if t.count > 0 {
                t.backend.copyFromHost(data + range.lowerBound * rowBytes, to: t.buffer, byteCount: range.count * rowBytes)
            }
            h.fixUp(t)
            return t
        }
    }

    /// Calls `body` with the member's parsed header and a pointer to its data (checked to be complete).
    private func withMember<R>(_ key: String, _ body: (NpyHeader, UnsafeRawPointer) throws -> R) throws -> R {
        guard let span = zip.entry(key + ".npy") else {
            throw HasteError.fileFormat(path: path, detail: "no array '\(key)' (the archive has \(keys.joined(separator: ", ")))")
        }
        if span.method == 0 {
            guard CheckedSize.fits(offset: span.offset, length: span.size, in: zip.file.count) else {   // TorchZip checked it
                throw span.fail("\(span.size) bytes at byte \(span.offset) run past the end of the file")
            }
            let member = UnsafeRawBufferPointer(rebasing: zip.file.bytes[span.offset..<(span.offset + span.size)])
            return try decode(key, member, body)
        }
        if inflated[key] == nil { inflated = [key: try span.bytes(verify: true)] }      // keep one inflated member
        return try inflated[key]!.withUnsafeBytes { try decode(key, $0, body) }
    }

    private func decode<R>(_ key: String, _ member: UnsafeRawBufferPointer, _ body: (NpyHeader, UnsafeRawPointer) throws -> R) throws -> R {
        let h = try NpyHeader.parse(member, path: "\(path)/\(key).npy")
        guard member.count - h.dataOffset >= h.byteCount else {
            throw HasteError.fileFormat(path: path, detail: "'\(key)': \(h.descr) \(h.shape) needs \(h.byteCount) bytes, "
                                        + "the member has \(member.count - h.dataOffset) (truncated file?)")
        }
        return try body(h, member.baseAddress! + h.dataOffset)
    }
}
