import Foundation
import Testing
import HasteIO
import HasteTensor
import HasteTraining

/// Issue #14 item 5: one trainer per run directory, a full disk is a clean stop after a checkpoint attempt,
/// and temporaries of an interrupted checkpoint write are removed at the next start.

@Test func aSecondOpenOfALockedRunDirectoryIsRefusedNamingItAndTheHolder() throws {
    let root = temporaryDirectory() + "/run"
    var first: RunDirectory? = try RunDirectory(root: root)
    var refusal = ""
    do { _ = try RunDirectory(root: root) } catch { refusal = "\(error)" }
    #expect(refusal.hasPrefix("\(root) is in use by another `haste train` (process \(getpid()))"), "\(refusal)")
    #expect(refusal.contains("--exp-name"))
    #expect(first != nil)
    first = nil                                                  // closing the descriptor drops the lock
    let again = try RunDirectory(root: root)
    #expect(again.root == root)
}

@Test func aTrainerRefusesARunDirectoryInUse() throws {
    let dir = temporaryDirectory()
    var c = tinyRunConfig(dir)
    (c.encType, c.maxTrainSteps) = ("none", 1)
    let holder = try RunDirectory(root: "\(dir)/run")
    var refusal = ""
    do { _ = try Trainer(config: c, dataset: SyntheticDataset()) } catch { refusal = "\(error)" }
    #expect(refusal.contains("\(dir)/run is in use by another `haste train`"), "\(refusal)")
    #expect(holder.root == "\(dir)/run")
}

@Test func temporariesOfAnInterruptedCheckpointWriteAreRemovedAtTheNextStart() throws {
    let dir = temporaryDirectory()
    let root = "\(dir)/run"
    try FileManager.default.createDirectory(atPath: "\(root)/checkpoints", withIntermediateDirectories: true)
    let leftovers = ["\(root)/checkpoints/0000002.safetensors.tmp-4242-3735928559", "\(root)/config.yaml.tmp-7-1",
                     "\(root)/samples/0000001.png.tmp-4242"]                   // PNGImage.write's pattern
    let kept = ["\(root)/checkpoints/0000002.safetensors", "\(root)/checkpoints/notes.tmp-x", "\(root)/checkpoints/a.tmp-1-2-3",
                "\(root)/samples.tmp-1-2/x"]
    for path in leftovers + kept {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
    }
    var c = tinyRunConfig(dir)
    (c.encType, c.maxTrainSteps, c.checkpointingSteps) = ("none", 1, 1)
    let trainer = try Trainer(config: c, dataset: SyntheticDataset())
    #expect(Set(trainer.run.removedTemporaries) == Set(leftovers))
    for path in leftovers { #expect(!FileManager.default.fileExists(atPath: path), "\(path) removed") }
    for path in kept { #expect(FileManager.default.fileExists(atPath: path), "\(path) kept") }
    let log = try String(contentsOfFile: "\(root)/log.txt", encoding: .utf8)
    #expect(log.contains("removed \(leftovers[0]), left by a write that was interrupted"))
    try trainer.train()                                          // and the run proceeds
    #expect(FileManager.default.fileExists(atPath: Checkpoint.path(root, step: 1)))
    #expect(AtomicFile.isTemporary("0000001.safetensors.tmp-12-34") && AtomicFile.isTemporary("loss.png.tmp-12"))
    #expect(!AtomicFile.isTemporary(".tmp-12-34") && !AtomicFile.isTemporary("a.tmp-") && !AtomicFile.isTemporary("a.tmp-1-2-3"))
}

/// A tiny run whose `file` in the run directory is /dev/full (every write fails with ENOSPC), linked before
/// the trainer opens the directory or between that and `train()` (metrics.jsonl is read at open).
private func trainIntoAFullDisk(_ file: String, linkBeforeInit: Bool) throws -> (message: String, root: String) {
    let dir = temporaryDirectory()
    let root = "\(dir)/run"
    var c = tinyRunConfig(dir)
    (c.encType, c.maxTrainSteps, c.checkpointingSteps) = ("none", 3, 1000)
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    func link() throws { try FileManager.default.createSymbolicLink(atPath: "\(root)/\(file)", withDestinationPath: "/dev/full") }
    if linkBeforeInit { try link() }
    let trainer = try Trainer(config: c, dataset: SyntheticDataset())
    if !linkBeforeInit { try link() }
    var message = ""
    do { try trainer.train() } catch { message = "\(error)" }
    return (message, root)
}

@Test(.enabled(if: FileManager.default.fileExists(atPath: "/dev/full"), "needs Linux's /dev/full"))
func aFullDiskStopsTrainingCleanlyAfterACheckpoint() throws {
    // log.txt: the start-up line fails; the first step notices, saves step 0's weights and stops.
    let log = try trainIntoAFullDisk("log.txt", linkBeforeInit: true)
    #expect(log.message.hasPrefix("training stopped at step 0: \(log.root)/log.txt: cannot append: No space left on device (is the disk full?)"),
            "\(log.message)")
    #expect(log.message.contains("Saved \(Checkpoint.path(log.root, step: 0)); free disk space and start again (no step was trained yet)."))
    #expect(FileManager.default.fileExists(atPath: Checkpoint.path(log.root, step: 0)))
    // metrics.jsonl: step 1's line fails; step 1 is saved.
    let metrics = try trainIntoAFullDisk("metrics.jsonl", linkBeforeInit: false)
    #expect(metrics.message.hasPrefix("training stopped at step 1: \(metrics.root)/metrics.jsonl: cannot append: No space left on device"),
            "\(metrics.message)")
    #expect(metrics.message.contains("Saved \(Checkpoint.path(metrics.root, step: 1)); free disk space and resume with --resume-step 1."))
    #expect(FileManager.default.fileExists(atPath: Checkpoint.path(metrics.root, step: 1)))
}

@Test func aFailedPreviewWriteStopsTrainingCleanlyAfterACheckpoint() throws {
    let dir = temporaryDirectory()
    let root = "\(dir)/run"
    var c = tinyRunConfig(dir)
    (c.encType, c.maxTrainSteps, c.checkpointingSteps) = ("none", 3, 1000)
    // A folder where step 1's preview grid goes: its PNG cannot be moved into place.
    try FileManager.default.createDirectory(atPath: "\(root)/samples/0000001.png", withIntermediateDirectories: true)
    var message = ""
    do { try Trainer(config: c, dataset: SyntheticDataset()).train() } catch { message = "\(error)" }
    #expect(message.hasPrefix("training stopped at step 1: \(root)/samples/0000001.png: cannot move"), "\(message)")
    #expect(message.contains("Saved \(Checkpoint.path(root, step: 1)); free disk space and resume with --resume-step 1."))
    #expect(FileManager.default.fileExists(atPath: Checkpoint.path(root, step: 1)))
}
