import Foundation
import Testing
@testable import HasteIO

/// A child process started while an HDF5 file is open inherits its descriptor; with HDF5's default file locks the
/// child kept the lock past our close, and opening the finished file failed ("not an HDF5 file") until the child
/// exited. That made COCOImportTests fail when another test's child process (an exit test) started at that moment.
/// haste opens and creates with the locks off (`haste_h5_file_access`).
@Suite struct HDF5ChildProcessTests {
    /// Starts `/bin/sleep 3` inheriting every descriptor (posix_spawn without file actions), returns its pid.
    static func childHoldingDescriptors() -> pid_t {
        var pid: pid_t = 0
        let args: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("3"), nil]
        defer { args.forEach { free($0) } }
        #expect(posix_spawn(&pid, "/bin/sleep", nil, nil, args, environ) == 0)
        return pid
    }

    static func reap(_ pid: pid_t) {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    @Test func aDatasetFileOpensWhileAChildStartedDuringItsWriteRuns() throws {
        try withTemporaryDirectory { tmp in
            let path = "\(tmp)/d.h5"
            let file = try HDF5DatasetFile.create(path, count: 1, resolution: 4, momentChannels: 0, momentSide: 0, classNames: ["a"])
            let child = Self.childHoldingDescriptors()
            defer { Self.reap(child) }
            try file.write(0, image: [UInt8](repeating: 7, count: 48), moments: nil, label: 0, filename: "x.png")
            try file.close()
            let read = try HDF5DatasetFile.open(path)
            #expect(read.count == 1)
            try read.close()
        }
    }

    @Test func aGenericFileOpensWhileAChildStartedDuringItsWriteRuns() throws {
        try withTemporaryDirectory { tmp in
            let path = "\(tmp)/g.h5"
            let file = try HDF5File.create(path)
            let child = Self.childHoldingDescriptors()
            defer { Self.reap(child) }
            try file.close()
            #expect(HDF5File.isHDF5(path))
            try HDF5File.open(path).close()
        }
    }
}
