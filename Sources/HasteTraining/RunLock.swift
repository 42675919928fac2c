#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import HasteTensor

/// An exclusive lock on a run directory (issue #14): a second `haste train` on the same directory would append
/// to the same metrics.jsonl and log.txt and overwrite the same checkpoints. Held until this object goes away.
///
/// `flock` on `<run>/.lock`, not `fcntl`: the kernel drops it when the process dies (kill -9 included), so a
/// lock is never stale and the file may stay; and two `open`s conflict even inside one process, where fcntl
/// locks are per process and any `close` of the file drops them. The holder's PID is written into the file
/// for the refusal message.
final class RunLock {
    let path: String
    private let fd: Int32

    init(directory: String) throws {
        path = "\(directory)/.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw HasteError.fileFormat(path: path, detail: "cannot create the run directory's lock file: \(String(cString: strerror(errno))); check that \(directory) is writable")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            let holder = RunLock.holder(fd).map { " (process \($0))" } ?? ""
            close(fd)
            if code == EWOULDBLOCK {
                throw HasteError.unsupported("\(directory) is in use by another `haste train`\(holder). Wait for it to finish or stop it, or train into another directory (--exp-name or --output-dir).")
            }
            throw HasteError.fileFormat(path: path, detail: "cannot lock the run directory: \(String(cString: strerror(code))); its filesystem may not support locks: use a local --output-dir")
        }
        self.fd = fd
        let pid = Array("\(getpid())\n".utf8)
        // Best effort: the PID only improves another process's message; the lock itself is already held.
        if ftruncate(fd, 0) == 0 { _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
    }

    deinit { close(fd) }                                         // releases the lock

    /// The PID the holder wrote, if readable.
    private static func holder(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return Int32(String(decoding: buffer[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
