import Foundation
import Testing
import HasteModels
import HasteTensor
@testable import HasteTraining

/// Issue #14 item 3: every numeric key is range-checked at load with the key, the range and the value named;
/// NaN/Inf never reach the JSON round trip; config files that are directories, binary, not UTF-8, too big,
/// alias bombs or absurdly nested are refused with the path.

private func message(_ body: () throws -> Void) -> String {
    do { try body(); return "" } catch { return "\(error)" }
}

/// A value just outside `range` and one on its inside edge, as flag strings.
private func probes(_ range: ConfigRange, isList: Bool) -> (bad: String, good: String) {
    let (bad, good): (Double, Double)
    switch range.bound {
    case let .atLeast(a): (bad, good) = (a - 1, a)
    case let .above(a): (bad, good) = (a, a + 1e-3)
    case let .closed(_, b): (bad, good) = (b + 1, b)
    case let .halfOpen(a, b): (bad, good) = (b, a)
    }
    func text(_ v: Double) -> String { v == v.rounded() ? "\(Int(v))" : "\(v)" }
    return isList ? ("[\(text(bad))]", "[\(text(good))]") : (text(bad), text(good))
}

@Test func everyNumericKeyHasARangeThatLoadEnforces() throws {
    let defaults = TrainConfig.typedDefaults()
    let numeric = Set(defaults.keys.filter { ConfigRange.isNumeric(defaults[$0]!) })
    #expect(numeric == Set(TrainConfig.ranges.keys), "keys without a range: \(numeric.subtracting(TrainConfig.ranges.keys))")
    #expect(numeric.count >= 40)
    for (key, range) in TrainConfig.ranges.sorted(by: { $0.key < $1.key }) {
        let (bad, good) = probes(range, isList: defaults[key] is [Int])
        let m = message { _ = try TrainConfig.load(file: nil, overrides: [(key, bad)]) }
        #expect(m.hasPrefix("config key '\(key)': must be \(range.text) (got "), "\(key)=\(bad): \(m)")
        #expect(message { _ = try TrainConfig.load(file: nil, overrides: [(key, good)]) } == "", "\(key)=\(good) is allowed")
    }
    // The cases, word for word.
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("checkpointing-steps", "0")]) }
            == "config key 'checkpointing-steps': must be ≥ 1 (got 0)")
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("learning-rate", "-1e-4")]) }
            == "config key 'learning-rate': must be ≥ 0 (got -0.0001)")
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("ema-decay", "2")]) }.contains("must be in [0, 1] (got 2.0)"))
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("attn-student-layers", "[4, -1]")]) }.contains("got -1 in [4, -1]"))
    #expect(message { _ = try TrainConfig.load(file: nil, overrides: [("resolution", "200")]) }.contains("teacher-grid"))
}

@Test func nonFiniteNumbersAreRefusedNamingTheKey() throws {
    let defaults = TrainConfig.typedDefaults()
    let dir = temporaryDirectory()
    for key in defaults.keys.sorted() where defaults[key] is Double || defaults[key] is Int {
        for (flag, yaml) in [("nan", ".nan"), ("inf", ".inf"), ("-inf", "-.inf")] {
            #expect(message { _ = try TrainConfig.load(file: nil, overrides: [(key, flag)]) }.hasPrefix("config key '\(key)': "))
            try "\(key): \(yaml)\n".write(toFile: "\(dir)/c.yaml", atomically: true, encoding: .utf8)
            #expect(message { _ = try TrainConfig.load(file: "\(dir)/c.yaml") }.hasPrefix("config key '\(key)': "), "\(key): \(yaml)")
        }
    }
}

@Test func configsBuiltInCodeAreValidatedToo() throws {
    var c = tinyRunConfig(temporaryDirectory())
    (c.encType, c.emaDecay) = ("none", 2)
    #expect(message { _ = try Trainer(config: c, dataset: SyntheticDataset()) }.contains("'ema-decay': must be in [0, 1]"))
    c.emaDecay = 0.999
    c.logEvery = 0
    #expect(message { _ = try Trainer(config: c, dataset: SyntheticDataset()) }.contains("'log-every': must be ≥ 1 (got 0)"))
    var t = TeacherTrainingConfig(teacher: try tinyRunConfig("").teacherConfig())
    t.learningRate = .nan
    #expect(message { try t.validate() }.contains("'learning-rate': must be a finite number > 0 (got nan)"))
    (t.learningRate, t.steps) = (1e-3, 0)
    #expect(message { try t.validate() }.contains("'steps': must be ≥ 1 (got 0)"))
    (t.steps, t.batchSize) = (3, 25)
    #expect(message { try TeacherTrainer.train(t, dataset: SyntheticDataset(), output: "\(temporaryDirectory())/t.safetensors") { _ in } }
            .contains("more than the 24 training images"))
}

@Test func configFilesThatAreNotTextConfigsAreRefusedWithThePath() throws {
    let dir = temporaryDirectory()
    func load(_ name: String, _ bytes: [UInt8]) -> String {
        let path = "\(dir)/\(name)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return message { _ = try TrainConfig.load(file: path) }
    }
    #expect(message { _ = try TrainConfig.load(file: dir) } == "\(dir): is a directory, not a config file; pass a YAML file such as configs/demo.yaml")
    #expect(load("ckpt.yaml", [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8)).contains("ckpt.yaml: is a binary file"))
    #expect(load("latin1.yaml", Array("model: ".utf8) + [0xE9, 0x0A]).contains("latin1.yaml: is not UTF-8 text"))
    #expect(load("big.yaml", Array(String(repeating: "# padding\n", count: 7000).utf8)).contains("big.yaml: is over"))
    #expect(message { _ = try TrainConfig.load(file: "\(dir)/none.yaml") }.contains("none.yaml: no such file"))
    #expect(load("list.yaml", Array("- 1\n- 2\n".utf8)).contains("expected a mapping of config keys"))
    #expect(load("deep.yaml", Array(("model: " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)).utf8))
            .contains("deep.yaml: nests more than 32 levels deep"))
}

@Test func yamlAliasBombsAreRefusedBeforeExpansion() throws {
    let dir = temporaryDirectory()
    // Billion laughs: 9 levels of 9 aliases = 9⁹ ≈ 387 M strings (gigabytes once Yams builds them).
    var lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    let names = Array("abcdefghi").map(String.init)
    for i in 1..<names.count {
        lines.append("\(names[i]): &\(names[i]) [" + Array(repeating: "*\(names[i - 1])", count: 9).joined(separator: ", ") + "]")
    }
    try lines.joined(separator: "\n").write(toFile: "\(dir)/bomb.yaml", atomically: true, encoding: .utf8)
    let start = Date()
    let m = message { _ = try TrainConfig.load(file: "\(dir)/bomb.yaml") }
    #expect(m.contains("bomb.yaml: its YAML aliases expand to more than 100000 nodes"), "\(m)")
    #expect(Date().timeIntervalSince(start) < 60, "refused before expanding")
    // Aliases within the budget are ordinary YAML.
    try "attn-student-layers: &l [1, 2]\nattn-teacher-layers: *l\n".write(toFile: "\(dir)/ok.yaml", atomically: true, encoding: .utf8)
    let c = try TrainConfig.load(file: "\(dir)/ok.yaml")
    #expect(c.attnStudentLayers == [1, 2] && c.attnTeacherLayers == [1, 2])
}
