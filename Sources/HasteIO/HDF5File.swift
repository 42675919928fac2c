import CHDF5
import Foundation
import HasteTensor

/// A plain HDF5 file whose layout the caller defines (e.g. the packed COCO features, "haste-coco-1"): string and
/// integer attributes on the root, and root datasets of uint8, float32 or int64 read and written a run of rows
/// (first axis) at a time. Every libhdf5 call holds `HDF5DatasetFile.lock` (the serial build is not thread-safe).
public final class HDF5File: @unchecked Sendable {
    public struct Dataset: Sendable {
        public let name: String
        let id: Int64
        /// nil for element types other than uint8, float32 and int64.
        public let dtype: DType?
        public let shape: [Int]
        /// Elements of one row (one index of the first axis).
        public var rowCount: Int { shape.dropFirst().reduce(1, *) }
    }

    let id: Int64
    public let path: String
    private var datasets: [Int64] = []
    private var closed = false

    private init(id: Int64, path: String) { (self.id, self.path) = (id, path) }

    static func locked<T>(_ body: () throws -> T) rethrows -> T {
        HDF5DatasetFile.lock.lock(); defer { HDF5DatasetFile.lock.unlock() }
        return try body()
    }

    static func code(_ d: DType) -> Int32 {
        switch d {
        case .uint8: return 0
        case .float32: return 1
        case .int64: return 2
        default: preconditionFailure("HDF5File: \(d) is not stored (uint8, float32, int64)")
        }
    }

    /// Creates (truncating) `path`.
    public static func create(_ path: String) throws -> HDF5File {
        var err = [CChar](repeating: 0, count: 512)
        let h = locked { haste_h5g_create(path, &err, err.count) }
        guard h >= 0 else { throw HasteError.fileFormat(path: path, detail: MappedFile.message(err)) }
        return HDF5File(id: h, path: path)
    }

    /// Opens `path` read-only.
    public static func open(_ path: String) throws -> HDF5File {
        guard FileManager.default.fileExists(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "give the .h5 file written by `haste preprocess --format hdf5|both`.")
        }
        var err = [CChar](repeating: 0, count: 512)
        let h = locked { haste_h5g_open(path, &err, err.count) }
        guard h >= 0 else { throw HasteError.fileFormat(path: path, detail: MappedFile.message(err)) }
        return HDF5File(id: h, path: path)
    }

    /// Whether a file starts with HDF5's signature.
    public static func isHDF5(_ path: String) -> Bool {
        guard let f = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? f.close() }
        return (try? f.read(upToCount: 8)).map { Array($0) == [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] } ?? false
    }

    public func setAttribute(_ name: String, _ value: String) throws {
        guard Self.locked({ haste_h5g_set_string_attr(id, name, value) }) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot write the attribute \(name)")
        }
    }

    public func setAttribute(_ name: String, _ value: Int) throws {
        guard Self.locked({ haste_h5g_set_int_attr(id, name, Int64(value)) }) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot write the attribute \(name)")
        }
    }

    /// A string attribute, nil when absent or not a string.
    public func stringAttribute(_ name: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        return Self.locked { haste_h5g_string_attr(id, name, &buf, buf.count) } == 0 ? MappedFile.message(buf) : nil
    }

    /// An integer attribute, nil when absent or not an integer.
    public func intAttribute(_ name: String) -> Int? {
        var v: Int64 = 0
        return Self.locked { haste_h5g_int_attr(id, name, &v) } == 0 ? Int(v) : nil
    }

    /// Names of the root's attributes, or (`datasets`) of its datasets, in name order.
    public func names(datasets: Bool) throws -> [String] {
        var buf = [CChar](repeating: 0, count: 1 << 16)
        let n = Self.locked { haste_h5g_names(id, datasets ? 1 : 0, &buf, buf.count) }
        guard n >= 0 else { throw HasteError.fileFormat(path: path, detail: "cannot list the root group") }
        return n == 0 ? [] : MappedFile.message(buf).components(separatedBy: "\n")
    }

    /// A new chunked dataset; `chunk` defaults to one row.
    public func createDataset(_ name: String, dtype: DType, shape: [Int], chunk: [Int]? = nil) throws -> Dataset {
        let dims = shape.map(Int64.init), ch = (chunk ?? ([1] + shape.dropFirst())).map { Int64(Swift.max($0, 1)) }
        let h = Self.locked { haste_h5g_create_dataset(id, name, Self.code(dtype), Int32(shape.count), dims, ch) }
        guard h >= 0 else { throw HasteError.fileFormat(path: path, detail: "cannot create the dataset /\(name) \(shape) (disk full?)") }
        datasets.append(h)
        return Dataset(name: name, id: h, dtype: dtype, shape: shape)
    }

    /// An existing dataset, nil when the file has none of that name.
    public func dataset(_ name: String) -> Dataset? {
        var code: Int32 = -1, rank: Int32 = 0
        var dims = [Int64](repeating: 0, count: 8)
        let h = Self.locked { haste_h5g_open_dataset(id, name, &code, &rank, &dims) }
        guard h >= 0 else { return nil }
        datasets.append(h)
        let dtype: DType? = code == 0 ? .uint8 : code == 1 ? .float32 : code == 2 ? .int64 : nil
        return Dataset(name: name, id: h, dtype: dtype, shape: dims.prefix(Int(rank)).map(Int.init))
    }

    /// Rows [start, start + count) of `d` (all of a rank-0 dataset) from or into `buffer`, as `d.dtype`.
    public func rows(_ d: Dataset, start: Int, count: Int, _ buffer: UnsafeMutableRawPointer, write: Bool) throws {
        guard let dtype = d.dtype else { throw HasteError.fileFormat(path: path, detail: "/\(d.name) is not uint8, float32 or int64") }
        let rc = Self.locked { haste_h5g_rows(d.id, Self.code(dtype), Int64(start), Int64(count), buffer, write ? 1 : 0) }
        guard rc == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot \(write ? "write" : "read") /\(d.name) rows \(start)..<\(start + count)\(write ? " (disk full?)" : "")")
        }
    }

    /// Writes `values` as rows starting at `start`.
    public func write<T>(_ d: Dataset, start: Int, _ values: [T]) throws {
        var v = values
        try v.withUnsafeMutableBytes { try rows(d, start: start, count: d.shape.isEmpty ? 1 : values.count / Swift.max(d.rowCount, 1), $0.baseAddress!, write: true) }
    }

    /// Reads `count` rows from `start` into a new array of `T` (which must match the dataset's dtype).
    public func read<T: Numeric>(_ d: Dataset, start: Int = 0, count: Int? = nil, as: T.Type) throws -> [T] {
        let n = d.shape.isEmpty ? 1 : (count ?? d.shape[0] - start)
        var out = [T](repeating: 0, count: n * d.rowCount)
        if !out.isEmpty { try out.withUnsafeMutableBytes { try rows(d, start: start, count: n, $0.baseAddress!, write: false) } }
        return out
    }

    deinit { try? close() }

    /// Closes the datasets and the file (once); a failure means the data may not be on disk.
    public func close() throws {
        let bad = Self.locked { () -> Bool in
            if closed { return false }
            closed = true
            var bad = false
            for d in datasets { bad = haste_h5g_close_dataset(d) != 0 || bad }
            return haste_h5g_close(id) != 0 || bad
        }
        if bad { throw HasteError.fileFormat(path: path, detail: "cannot close (disk full?)") }
    }
}
