import Foundation
import Testing

/// The built `haste` executable: beside the test runner (`swift build --build-tests` builds both), else in the
/// package's .build/debug.
func hasteExecutable() throws -> String {
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    let candidates = [runner.deletingLastPathComponent().appendingPathComponent("haste").path,
                      runner.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("haste").path,
                      root.appendingPathComponent(".build/debug/haste").path]
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "no haste executable in \(candidates); run `swift build` first"])
    }
    return found
}

/// Runs `haste` with `arguments`; returns the exit status and stderr.
func runHaste(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try hasteExecutable())
    p.arguments = arguments
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    let data = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Test func threadCountsAreRefusedBelowOneAndCappedAbove() throws {
    let zero = try runHaste(["train", "--print-config", "--threads", "0"])
    #expect(zero.status == 64 && zero.stderr.contains("--threads must be at least 1, got 0"), "\(zero)")
    let cores = ProcessInfo.processInfo.activeProcessorCount, cap = min(1024, 4 * cores)
    let huge = try runHaste(["train", "--print-config", "--threads", "100000"])
    #expect(huge.status == 0, "\(huge)")
    #expect(huge.stderr.contains("--threads 100000 is more than 4 per core (\(cores) cores here); using \(cap)"), "\(huge)")
    let fine = try runHaste(["train", "--print-config", "--threads", "\(cap)"])
    #expect(fine.status == 0 && fine.stderr.isEmpty, "\(fine)")
}
