import Foundation

/// Runs the built `haste` executable, alone or under `mpirun`, for tests of what only whole processes show
/// (data-parallel ranks, exit codes).
enum Launcher {
    /// `.build/<triple>/debug/haste`: beside the test bundle (swift test builds every product first).
    static var haste: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for dir in [beside, beside.deletingLastPathComponent()] {
            let p = dir.appendingPathComponent("haste").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/haste").path
    }

    /// The repository root (configs/ lives there).
    static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// `mpirun` on PATH, if Open MPI is installed (Scripts/setup.sh installs openmpi-bin).
    static let mpirun: String? = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
        .map { "\($0)/mpirun" }.first { FileManager.default.isExecutableFile(atPath: $0) }

    struct Result { let status: Int32, stdout: String, stderr: String, timedOut: Bool }

    /// `haste args…`, or `mpirun -np ranks haste args…` (as root too: Open MPI's allow-run-as-root variables;
    /// oversubscribed: CI machines have 2 cores), or `executable args…` (a script). Killed after `timeout` seconds.
    static func run(_ args: [String], ranks: Int = 0, timeout: Double = 600, executable: String? = nil,
                    environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        for k in env.keys where k.hasPrefix("OMPI_COMM_WORLD") || k.hasPrefix("PMIX_") || k.hasPrefix("PMI_") { env[k] = nil }
        // A cache of its own per run: a reference-statistics entry left by an earlier run (or by the 1-process
        // half of a comparison) would otherwise spare the process the very work a test means to check.
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("haste-cache-\(UUID().uuidString)").path
        env["HASTE_CACHE"] = cache
        defer { try? FileManager.default.removeItem(atPath: cache) }
        if ranks > 0 {
            guard let mpirun else { throw CocoaError(.fileNoSuchFile) }
            p.executableURL = URL(fileURLWithPath: mpirun)
            p.arguments = ["--oversubscribe", "--bind-to", "none", "-np", "\(ranks)", haste] + args
            (env["OMPI_ALLOW_RUN_AS_ROOT"], env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"]) = ("1", "1")
        } else {
            p.executableURL = URL(fileURLWithPath: executable ?? haste)
            p.arguments = args
        }
        p.environment = env
        let out = Pipe(), err = Pipe()
        (p.standardOutput, p.standardError) = (out, err)
        // Drain both pipes while the process runs (a full pipe would block it).
        let outBox = DrainedPipe(), errBox = DrainedPipe(), group = DispatchGroup()
        for (pipe, box) in [(out, outBox), (err, errBox)] {
            DispatchQueue.global().async(group: group) { box.set(pipe.fileHandleForReading.readDataToEndOfFile()) }
        }
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        let timedOut = p.isRunning
        if timedOut { p.terminate() }
        p.waitUntilExit()
        group.wait()
        return Result(status: p.terminationStatus, stdout: String(decoding: outBox.data, as: UTF8.self),
                      stderr: String(decoding: errBox.data, as: UTF8.self), timedOut: timedOut)
    }
}

/// What one pipe delivered, set by the thread that drained it and read after `group.wait()`.
private final class DrainedPipe: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = Data()
    var data: Data { lock.lock(); defer { lock.unlock() }; return stored }
    func set(_ d: Data) { lock.lock(); stored = d; lock.unlock() }
}
