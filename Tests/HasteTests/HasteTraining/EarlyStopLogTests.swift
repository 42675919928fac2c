import Foundation
import Testing
import HasteTensor
@testable import HasteTraining

/// Issue #18 item 5: the training log says when alignment stops, once, and what became of the teacher.

private final class Messages: TrainingObserver {
    var lines: [String] = []
    func progress(_ line: String) {}
    func message(_ line: String) { lines.append(line) }
}

@Test(arguments: [true, false])
func earlyStopIsLoggedOnceWithTheTeachersFate(skipTeacher: Bool) throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)                                   // early-stop-point 2 of 4 steps
    c.encWeights = try writeTinyTeacher(dir, c)
    c.skipTeacherAfterStop = skipTeacher
    let console = Messages()
    let trainer = try Trainer(config: c, dataset: SyntheticDataset(), observer: console)
    #expect(trainer.teacher != nil)
    try trainer.train()
    let expected = skipTeacher ? "step 2: alignment stopped; teacher unloaded"
        : "step 2: alignment stopped; teacher still run and its output discarded (skip-teacher-after-stop false, as the reference)"
    let log = try String(contentsOfFile: "\(dir)/run/log.txt", encoding: .utf8)
    #expect(log.components(separatedBy: "alignment stopped").count == 2, "once in log.txt: \(log)")
    #expect(log.contains(expected), "\(log)")
    #expect(console.lines.filter { $0.contains("alignment stopped") } == [expected], "\(console.lines)")
    #expect((trainer.teacher == nil) == skipTeacher, "the teacher is released only when it is skipped")
}

@Test func runsWithoutATeacherNeverSayAlignmentStopped() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    c.encType = "none"
    let console = Messages()
    try Trainer(config: c, dataset: SyntheticDataset(), observer: console).train()
    #expect(!console.lines.contains { $0.contains("alignment stopped") }, "\(console.lines)")
}

@Test func unknownStringChoicesAreRefusedAtLoad() throws {
    for (key, value, allowed) in [("mixed-precision", "bf17", "no, fp16, bf16"), ("prediction", "eps", "v"),
                                  ("dataset", "imagenet1k", "imagenet, images, fashion-mnist")] {
        do {
            _ = try TrainConfig.load(file: nil, overrides: [(key, value)])
            Issue.record("\(key)=\(value) was accepted")
        } catch {
            #expect("\(error)".contains("config key '\(key)': unknown value '\(value)'; allowed: \(allowed)"), "\(error)")
        }
    }
    #expect(try TrainConfig.load(file: nil, overrides: [("mixed-precision", "bf16")]).mixedPrecision == "bf16")
}
