#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import HasteTensor

/// Writes a file through a temporary sibling, fsync and rename, so a reader (or a crash) never sees half a
/// file and an existing file is replaced in one step. Errors name the destination and say what to check.
/// A kill between create and rename leaves `<path>.tmp-<pid>-<random>`; `removeLeftovers` clears them.
public struct AtomicFile {
    let path: String
    private let temporary: String
    private var fd: Int32

    private init(path: String) throws {
        self.path = path
        temporary = AtomicFile.temporaryPath(for: path)
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot create \(temporary): \(MappedFile.message(errno)) "
                                        + "(check that the folder exists and is writable)")
        }
    }

    /// Runs `body` with a writer for the new contents, then moves the file into place.
    static func write(to path: String, _ body: (inout AtomicFile) throws -> Void) throws {
        var file = try AtomicFile(path: path)
        do {
            try body(&file)
            try file.commit()
        } catch {
            if file.fd >= 0 { close(file.fd) }
            unlink(file.temporary)
            throw error
        }
    }

    /// Writes `bytes` as the whole new contents of `path`.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try write(to: path) { try $0.append(bytes) }
    }

    static let marker = ".tmp-"

    /// `<path>.tmp-<pid>-<random>`: where every writer of haste's (this type, `PNGImage.write`) puts a file's new
    /// contents before the rename.
    public static func temporaryPath(for path: String) -> String {
        path + marker + "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Whether `name` (a file name, no folder) is one of our temporaries: `<name>.tmp-<pid>-<random>`, or
    /// `<name>.tmp-<pid>` as PNG writes of earlier versions left them.
    public static func isTemporary(_ name: String) -> Bool {
        guard let r = name.range(of: marker, options: .backwards), r.lowerBound > name.startIndex else { return false }
        let parts = name[r.upperBound...].split(separator: "-", omittingEmptySubsequences: false)
        return (1...2).contains(parts.count) && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
    }

    /// Deletes our temporaries (plain files) in `directory` (not below it) and returns their paths. Call it only while no
    /// other process writes there (the run directory's lock), or a live writer loses its file.
    public static func removeLeftovers(in directory: String) throws -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var removed: [String] = []
        for name in names.sorted() where isTemporary(name) {
            let path = "\(directory)/\(name)"
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }   // ours are plain files
            guard unlink(path) == 0 || errno == ENOENT else {
                throw HasteError.fileFormat(path: path, detail: "cannot remove this leftover temporary file: \(MappedFile.message(errno)); delete it by hand")
            }
            removed.append(path)
        }
        return removed
    }

    /// Appends `count` bytes, looping over short writes and interrupts.
    mutating func append(_ bytes: UnsafeRawPointer, count: Int) throws {
        var done = 0
        while done < count {
            let n = systemWrite(fd, bytes + done, min(count - done, 1 << 30))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw failure("write failed") }
            done += n
        }
    }

    mutating func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            if let base = raw.baseAddress { try append(base, count: raw.count) }
        }
    }

    private mutating func commit() throws {
        guard fsync(fd) == 0 else { throw failure("fsync failed") }
        let closed = close(fd)
        fd = -1
        guard closed == 0 else { throw failure("close failed") }
        guard rename(temporary, path) == 0 else { throw failure("cannot rename \(temporary) into place") }
    }

    private func failure(_ what: String) -> HasteError {
        .fileFormat(path: path, detail: "\(what): \(MappedFile.message(errno)) (check free disk space and permissions)")
    }
}

/// POSIX write(2), named apart from `AtomicFile.write(to:_:)`.
private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { write(fd, bytes, count) }
