#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HasteTensor

/// A whole file mapped read-only; unmapped when the last reference goes. Readers parse straight from the
/// mapping, so a multi-gigabyte checkpoint costs no copy until a tensor is asked for.
/// A file truncated by another process while mapped would fault on access: checkpoints are written through
/// `AtomicFile` (a new inode), which never truncates a file someone is reading.
final class MappedFile: @unchecked Sendable {
    let path: String
    let count: Int
    private let base: UnsafeRawPointer?   // nil for an empty file (mmap refuses length 0)

    /// `kind` names what the file should be, for the error hint ("a .safetensors file").
    init(path: String, kind: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw HasteError.fileMissing(path: path, hint: "Check the path (expected \(kind)).") }
            throw HasteError.fileFormat(path: path, detail: "cannot open: \(MappedFile.message(code))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot stat: \(MappedFile.message(errno))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw HasteError.fileFormat(path: path, detail: "not a regular file (expected \(kind))")
        }
        count = Int(info.st_size)
        if count == 0 { base = nil; return }
        let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw HasteError.fileFormat(path: path, detail: "cannot map \(count) bytes: \(MappedFile.message(errno))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }

    /// The file's bytes; valid while `self` is alive.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: base == nil ? 0 : count) }

    static func message(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// The NUL-terminated message a C shim wrote into `buffer`.
    static func message(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension UnsafeRawBufferPointer {
    /// Little-endian unsigned integer of `size` bytes at `offset` (caller checks the range).
    func littleEndianInteger(at offset: Int, size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in stride(from: size - 1, through: 0, by: -1) { v = v << 8 | UInt64(self[offset + i]) }
        return v
    }
}
