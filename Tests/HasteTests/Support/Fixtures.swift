import Foundation
import Testing
import HasteTensor
import HasteIO

/// A PyTorch fixture made by Scripts/make_fixtures.py (STYLE R11): inputs, weights, outputs and gradients.
struct Fixture {
    /// Bump together with FORMAT_VERSION in Scripts/make_fixtures.py.
    static let formatVersion = "1"
    let file: SafetensorsFile

    init(_ name: String) throws {
        guard let url = Bundle.module.url(forResource: "Fixtures/" + name, withExtension: nil) else {
            throw HasteError.fileMissing(path: "Tests/HasteTests/Fixtures/\(name)",
                                         hint: "Regenerate with Scripts/make_fixtures.py (needs PyTorch).")
        }
        file = try SafetensorsFile(path: url.path)
        let v = file.metadata["format_version"] ?? "?"
        if v != Fixture.formatVersion {
            throw HasteError.fileFormat(path: url.path, detail: "fixture format \(v), tests expect \(Fixture.formatVersion): regenerate with Scripts/make_fixtures.py")
        }
    }

    /// The named tensor; float16/bfloat16 are widened to float32.
    subscript(_ key: String) -> Tensor {
        do {
            let t = try file.tensor(key)
            return t.dtype == .float16 || t.dtype == .bfloat16 ? t.to(.float32) : t
        } catch {
            Issue.record("fixture \(file.path): \(error)")
            return Tensor.zeros([0])
        }
    }

    func has(_ key: String) -> Bool { file.entry(key) != nil }

    /// Entries under `prefix`, with the prefix stripped (e.g. a module's state dict).
    func tensors(under prefix: String) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for name in file.names where name.hasPrefix(prefix) { out[String(name.dropFirst(prefix.count))] = self[name] }
        return out
    }

    func scalar(_ key: String) -> Double { Double(file.metadata[key] ?? "nan") ?? .nan }
}
