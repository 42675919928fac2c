import HasteTensor

/// numpy's `.npy` arrays (numpy `lib/format.py`; torch: `np.save`/`np.load` around `tensor.numpy()`).
/// Reads versions 1.0/2.0/3.0 with descr <f2 <f4 <f8 <i4 <i8 |u1 |b1 (big-endian ">…" is byte-swapped, Fortran
/// order is transposed to C order); writes version 1.0 little-endian C order, atomically, as `np.save` does.
public enum NpyFile {
    /// The header alone (for `haste inspect`); the data is not read.
    public static func header(_ path: String) throws -> NpyHeader {
        let file = try MappedFile(path: path, kind: "a .npy file")
        return try NpyHeader.parse(file.bytes, path: path)
    }

    /// The array as a contiguous CPU tensor of the matching dtype, in C order.
    public static func read(_ path: String) throws -> Tensor {
        let file = try MappedFile(path: path, kind: "a .npy file")
        let h = try NpyHeader.parse(file.bytes, path: path)
        let available = file.count - h.dataOffset
        guard available >= h.byteCount else {
            throw HasteError.fileFormat(path: path, detail: "not a valid .npy file: \(h.descr) \(h.shape) needs "
                                        + "\(h.byteCount) data bytes, the file has \(available) (truncated file?)")
        }
        guard available == h.byteCount else {
            throw HasteError.fileFormat(path: path, detail: "not a valid .npy file: \(available - h.byteCount) "
                                        + "bytes follow the \(h.byteCount) data bytes of \(h.descr) \(h.shape)")
        }
        return h.tensor(from: file.bytes.baseAddress! + h.dataOffset)
    }

    /// Writes `t` (any device, any layout) as a version 1.0 .npy file, as `np.save` would.
    public static func write(_ t: Tensor, to path: String) throws {
        guard let header = NpyHeader.encode(dtype: t.dtype, shape: t.shape) else {
            throw HasteError.fileFormat(path: path, detail: "numpy has no \(t.dtype); convert with .to(.float32) before writing .npy")
        }
        let c = t.to(.cpu).contiguous()
        let bytes = c.count * c.dtype.byteSize
        try AtomicFile.write(to: path) { file in
            try file.append(header)
            if bytes > 0 { try file.append(c.buffer.rawPointer, count: bytes) }
        }
        withExtendedLifetime(c) {}
    }
}

extension NpyHeader {
    /// The array whose data (`byteCount` bytes) start at `data`, as a contiguous CPU tensor in C order: byte
    /// order fixed, bools normalised, Fortran order transposed (the one decoder of .npy payloads, .npz too).
    func tensor(from data: UnsafeRawPointer) -> Tensor {
        // Fortran order of shape S is C order of S reversed; reversing the axes of that view gives S.
        let stored = Tensor.empty(fortranOrder ? shape.reversed() : shape, dtype: dtype)
        if byteCount > 0 { stored.backend.copyFromHost(data, to: stored.buffer, byteCount: byteCount) }
        fixUp(stored)
        guard fortranOrder, stored.rank > 1 else { return stored }
        return stored.permuted(Array((0..<stored.rank).reversed())).contiguous()
    }

    /// Host byte order and 0/1 bools, in place, for elements copied from a payload.
    func fixUp(_ t: Tensor) {
        if isBigEndian { NpyHeader.swapBytes(t) }
        if dtype == .bool { normalizeBools(t) }
    }

    /// Big-endian elements → host (little-endian) order, in place.
    static func swapBytes(_ t: Tensor) {
        let raw = t.buffer.rawPointer, n = t.count
        switch t.dtype.byteSize {
        case 8: let p = raw.assumingMemoryBound(to: UInt64.self); for i in 0..<n { p[i] = p[i].byteSwapped }
        case 4: let p = raw.assumingMemoryBound(to: UInt32.self); for i in 0..<n { p[i] = p[i].byteSwapped }
        case 2: let p = raw.assumingMemoryBound(to: UInt16.self); for i in 0..<n { p[i] = p[i].byteSwapped }
        default: break
        }
    }
}
