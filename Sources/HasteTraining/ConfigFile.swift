import Foundation
import HasteTensor
import Yams

/// Reads a config file defensively (issue #14). A config is a few KB of YAML, so a directory, a binary or
/// non-UTF-8 file, a file over `byteLimit`, YAML whose aliases expand past `nodeBudget` nodes (a "billion
/// laughs" file takes gigabytes when Yams builds its values) and YAML nested deeper than `depthLimit` are
/// refused, naming the path and the fix.
enum ConfigFile {
    static let byteLimit = 64 << 10
    /// Nodes after alias expansion; a complete config has about 150.
    static let nodeBudget = 100_000
    /// A config nests 2 deep (mapping → list → number).
    static let depthLimit = 32
    /// Yams composes recursively, one stack frame (≤ 2 KB in debug builds) per nesting level, and `byteLimit`
    /// bytes of `[[[[…` nest that deep before any check can run: parsing gets a thread with this stack.
    static let parserStack = 256 << 20

    /// The top-level mapping of `path`.
    static func mapping(at path: String) throws -> [String: Any] {
        let text = try self.text(at: path)
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: detail) }
        return try onParserStack {
            let root: Node?
            do { root = try Yams.compose(yaml: text) } catch { throw bad("not valid YAML: \(error)") }
            guard let root, case .mapping = root else {
                throw bad("expected a mapping of config keys (e.g. `model: SiT-B/2`)")
            }
            // Composing shares aliased nodes; building values (`any`) copies them. Count before building.
            var budget = nodeBudget
            switch measure(root, budget: &budget, depth: 1) {
            case .fits: break
            case .tooMany:
                throw bad("its YAML aliases expand to more than \(nodeBudget) nodes (an alias bomb?); write the values out instead of nesting aliases")
            case .tooDeep:
                throw bad("nests more than \(depthLimit) levels deep; a config is a mapping of numbers, strings and lists")
            }
            guard let dict = root.any as? [String: Any] else {
                throw bad("expected a mapping of config keys (e.g. `model: SiT-B/2`), with plain keys")
            }
            return dict
        }
    }

    /// The file's text: it must exist, be no directory, hold at most `byteLimit` bytes, no NUL byte, and be UTF-8.
    static func text(at path: String) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw HasteError.fileMissing(path: path, hint: "Pass an existing config, e.g. configs/demo.yaml.")
        }
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: detail) }
        if isDirectory.boolValue { throw bad("is a directory, not a config file; pass a YAML file such as configs/demo.yaml") }
        let data: Data
        do {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CocoaError(.fileReadNoPermission) }
            defer { try? handle.close() }
            data = try handle.read(upToCount: byteLimit + 1) ?? Data()      // bounded: /dev/zero must not hang us
        } catch {
            throw bad("cannot be read (\(error.localizedDescription)); check its permissions")
        }
        if data.count > byteLimit {
            throw bad("is over \(byteLimit >> 20) MiB; a config is a few KB of YAML: is this the right file?")
        }
        if data.contains(0) {
            throw bad("is a binary file (it contains NUL bytes), not a YAML or JSON config; pass e.g. configs/demo.yaml")
        }
        guard let text = String(bytes: data, encoding: .utf8) else {
            throw bad("is not UTF-8 text; save it as UTF-8 (YAML files are)")
        }
        return text
    }

    enum Measure { case fits, tooMany, tooDeep }

    /// Decrements `budget` once per node, aliases counted at every use; stops as soon as it runs out or
    /// `depth` passes `depthLimit`.
    private static func measure(_ node: Node, budget: inout Int, depth: Int) -> Measure {
        budget -= 1
        guard budget >= 0 else { return .tooMany }
        guard depth <= depthLimit else { return .tooDeep }
        let children: [Node]
        switch node {
        case .scalar: return .fits
        case let .mapping(m): children = m.flatMap { [$0.key, $0.value] }
        case let .sequence(s): children = Array(s)
        }
        for child in children {
            let m = measure(child, budget: &budget, depth: depth + 1)
            if m != .fits { return m }
        }
        return .fits
    }

    /// Runs `body` on a thread whose stack is `parserStack` bytes (reserved, touched only as deep as it goes).
    private static func onParserStack(_ body: @escaping () throws -> [String: Any]) throws -> [String: Any] {
        let box = ResultBox(), done = DispatchSemaphore(value: 0)
        let thread = Thread { box.result = Result { try body() }; done.signal() }
        thread.stackSize = parserStack
        thread.start()
        done.wait()
        return try box.result!.get()
    }
}

/// The parser thread's result, written before its semaphore signals and read after.
private final class ResultBox: @unchecked Sendable {
    var result: Result<[String: Any], Error>?
}
