import CHDF5
import Foundation
import HasteTensor

/// The packed dataset file (format "haste-dataset-1"; layout in Sources/CHDF5/include/CHDF5.h). libhdf5 is
/// not thread-safe in its serial build, so every call goes through one process-wide lock.
public final class HDF5DatasetFile: @unchecked Sendable {
    static let lock = NSLock()
    let handle: OpaquePointer
    private var closed = false
    public let path: String
    public let count: Int, resolution: Int, momentChannels: Int, momentSide: Int

    private init(handle: OpaquePointer, path: String) {
        self.handle = handle
        self.path = path
        count = Int(haste_h5_count(handle))
        resolution = Int(haste_h5_resolution(handle))
        momentChannels = Int(haste_h5_moment_channels(handle))
        momentSide = Int(haste_h5_moment_side(handle))
    }


    /// Creates (truncating) `path` for `count` items; momentChannels 0 = no /moments.
    public static func create(_ path: String, count: Int, resolution: Int, momentChannels: Int, momentSide: Int,
                              classNames: [String]) throws -> HDF5DatasetFile {
        lock.lock(); defer { lock.unlock() }
        var err = [CChar](repeating: 0, count: 512)
        let cstrings = classNames.map { strdup($0) }
        defer { cstrings.forEach { free($0) } }
        let ptrs: [UnsafePointer<CChar>?] = cstrings.map { UnsafePointer($0) }
        let h = ptrs.withUnsafeBufferPointer {
            haste_h5_create(path, Int64(count), Int32(resolution), Int32(momentChannels), Int32(momentSide),
                            $0.baseAddress, Int32(classNames.count), &err, err.count)
        }
        guard let h else { throw HasteError.fileFormat(path: path, detail: MappedFile.message(err)) }
        return HDF5DatasetFile(handle: h, path: path)
    }

    public static func open(_ path: String) throws -> HDF5DatasetFile {
        lock.lock(); defer { lock.unlock() }
        var err = [CChar](repeating: 0, count: 512)
        guard let h = haste_h5_open(path, &err, err.count) else { throw HasteError.fileFormat(path: path, detail: MappedFile.message(err)) }
        return HDF5DatasetFile(handle: h, path: path)
    }

    /// Item i: image uint8 CHW [3, R, R], moments float32 [C, S, S] (nil when the file has none).
    public func write(_ i: Int, image: [UInt8], moments: [Float]?, label: Int64, filename: String) throws {
        require(image.count == 3 * resolution * resolution, "HDF5DatasetFile.write: image has \(image.count) bytes, expected 3×\(resolution)²")
        require(moments == nil || moments!.count == momentChannels * momentSide * momentSide, "HDF5DatasetFile.write: moments size")
        Self.lock.lock(); defer { Self.lock.unlock() }
        var err = [CChar](repeating: 0, count: 512)
        let rc = image.withUnsafeBufferPointer { img in
            (moments ?? []).withUnsafeBufferPointer { m in
                haste_h5_write_item(handle, Int64(i), img.baseAddress, moments == nil ? nil : m.baseAddress, label, filename, &err, err.count)
            }
        }
        if rc != 0 { throw HasteError.fileFormat(path: path, detail: MappedFile.message(err)) }
    }

    /// Item i's image (uint8 CHW, 3·R·R bytes) written to `out`, e.g. straight into a batch buffer.
    public func readImage(_ i: Int, into out: UnsafeMutablePointer<UInt8>) throws {
        Self.lock.lock(); defer { Self.lock.unlock() }
        guard haste_h5_read_image(handle, Int64(i), out) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot read /images[\(i)]")
        }
    }

    /// Item i's moments (float32 [C, S, S]) written to `out`.
    public func readMoments(_ i: Int, into out: UnsafeMutablePointer<Float>) throws {
        Self.lock.lock(); defer { Self.lock.unlock() }
        guard momentChannels > 0, haste_h5_read_moments(handle, Int64(i), out) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot read /moments[\(i)] (packed without VAE latents? run `haste preprocess --stage all`)")
        }
    }

    public func labels() throws -> [Int64] {
        var out = [Int64](repeating: 0, count: count)
        Self.lock.lock(); defer { Self.lock.unlock() }
        guard out.withUnsafeMutableBufferPointer({ haste_h5_read_labels(handle, $0.baseAddress) }) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot read /labels")
        }
        return out
    }

    public func classNames() throws -> [String] {
        var buf = [CChar](repeating: 0, count: 1 << 20)
        Self.lock.lock(); defer { Self.lock.unlock() }
        let n = haste_h5_class_names(handle, &buf, buf.count)
        guard n >= 0 else { throw HasteError.fileFormat(path: path, detail: "cannot read the class_names attribute") }
        return n == 0 ? [] : MappedFile.message(buf).components(separatedBy: "\n")
    }

    public func filename(_ i: Int) throws -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        Self.lock.lock(); defer { Self.lock.unlock() }
        guard haste_h5_filename(handle, Int64(i), &buf, buf.count) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot read /filenames[\(i)]")
        }
        return MappedFile.message(buf)
    }

    deinit { try? close() }

    /// Flushes and closes (once); the object must not be used afterwards.
    public func close() throws {
        Self.lock.lock(); defer { Self.lock.unlock() }
        if closed { return }
        closed = true
        if haste_h5_close(handle) != 0 { throw HasteError.fileFormat(path: path, detail: "cannot close (disk full?)") }
    }
}
