import Testing
@testable import HasteTraining

/// `haste bench train --saved-bytes` (issue 15 item 2): one step of a SiT row, its graph's bytes per op type.
@Suite struct SavedBytesCommandTests {
    @Test func savedBytesPrintsTheTableOfATrainingRow() throws {
        let row = "\(CostSweep.tinyModel) bs1"
        let r = try Launcher.run(["bench", "train", "--models", CostSweep.tinyModel, "--batches", "1", "--only", row,
                                  "--saved-bytes", "--threads", "1"], timeout: 120)
        #expect(r.status == 0, "\(r)")
        for part in ["\(row): bytes held for backward", "LinearBackward", "AttentionBackward", "total"] {
            #expect(r.stdout.contains(part), "missing '\(part)' in \(r.stdout)")
        }
    }

    @Test func savedBytesFlagsAreChecked() throws {
        func refused(_ args: [String], _ message: String) throws {
            let r = try Launcher.run(["bench", "train", "--saved-bytes"] + args, timeout: 60)
            #expect(r.status == 64 && r.stderr.contains(message), "\(args): \(r)")
        }
        try refused([], "--saved-bytes needs --only naming a SiT row")
        try refused(["--only", "DINOv2-B fwd bs16"], "--saved-bytes needs --only naming a SiT row")
        try refused(["--sweep"], "--saved-bytes measures one training row: drop --sweep")
    }
}
