import Foundation
import Testing
import HasteIO
import HasteTensor
@testable import HasteTraining

// `haste plot` and the replication table (issue #17): synthetic run directories written here, read back through
// RunRecord, grouped by seed suffix, drawn and tabulated.

/// A run directory as haste train leaves it: config.yaml, metrics.jsonl (loss terms every step, FID every
/// `fidEvery`), log.txt with the "training" line, FID lines and, for a stopped run, "alignment stopped".
@discardableResult
func writeSyntheticRun(_ root: String, name: String, seed: Int, encType: String = "dinov2-vit-s", attn: Double = 0.5,
                       stop: Int? = nil, steps: Int = 40, fidEvery: Int = 10, fid: (Int) -> Double, minutes: Int = 3) throws -> String {
    let dir = "\(root)/\(name)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let proj = encType == "none" ? 0 : 0.5
    try """
    attn-coeff: \(encType == "none" ? 0 : attn)
    early-stop-point: \(stop ?? 1000000)
    enc-type: \(encType)
    exp-name: \(name)
    max-train-steps: \(steps)
    proj-coeff: \(proj)
    seed: \(seed)

    """.write(toFile: "\(dir)/config.yaml", atomically: true, encoding: .utf8)
    var lines: [String] = []
    for s in 1...steps {
        let aligned = encType != "none" && s <= (stop ?? .max)
        var line = "{\"attn_loss\":\(aligned && attn > 0 ? 2.0 - Double(s) / 100 : 0),\"loss\":\(1.0 / Double(s) + Double(seed) * 0.01),"
            + "\"proj_loss\":\(aligned ? -0.5 - Double(s) / 100 : 0),\"step\":\(s)"
        if s % fidEvery == 0 { line += ",\"fid\":\(fid(s))" }
        lines.append(line + "}")
    }
    try (lines.joined(separator: "\n") + "\n").write(toFile: "\(dir)/metrics.jsonl", atomically: true, encoding: .utf8)
    var log = ["2025-01-01T10:00:00Z training SiT-S/4 (1 trainable parameters) on 10 items; teacher"]
    if let stop, stop <= steps { log.append("2025-01-01T10:01:00Z step \(stop): alignment stopped; teacher unloaded") }
    log.append(String(format: "2025-01-01T10:%02d:00Z done at step %d", minutes, steps))
    try (log.joined(separator: "\n") + "\n").write(toFile: "\(dir)/log.txt", atomically: true, encoding: .utf8)
    return dir
}

/// Three HASTE seeds (stopped at step 20), one vanilla run: FID falls faster for HASTE.
func syntheticComparison(_ root: String) throws -> [String] {
    var dirs: [String] = []
    for seed in 0..<3 {
        dirs.append(try writeSyntheticRun(root, name: "haste-seed\(seed)", seed: seed, stop: 20, fid: { 200 - Double($0) * 3 + Double(seed) * 4 }))
    }
    dirs.append(try writeSyntheticRun(root, name: "vanilla-seed0", seed: 0, encType: "none", fid: { 200 - Double($0) * 2 }))
    return dirs
}

@Test func seedSuffixesGroupRunsAndNothingElse() {
    #expect(RunGroup.groupName("haste-seed3") == "haste" && RunGroup.groupName("haste_seed12") == "haste")
    #expect(RunGroup.groupName("haste-nostop-seed0") == "haste-nostop" && RunGroup.groupName("demo") == "demo")
    #expect(RunGroup.groupName("haste-seed") == "haste-seed" && RunGroup.groupName("-seed1") == "-seed1" && RunGroup.groupName("seedless-seedx") == "seedless-seedx")
}

@Test func runDirectoriesAreReadWithTheirStopAndWallTime() throws {
    let root = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let dirs = try syntheticComparison(root)
    let haste = try RunRecord(loading: dirs[0]), vanilla = try RunRecord(loading: dirs[3])
    #expect(haste.name == "haste-seed0" && haste.seed == 0 && haste.earlyStop == 20 && haste.wallSeconds == 180)
    #expect(haste.metrics["fid"]!.map(\.step) == [10, 20, 30, 40] && haste.metrics["loss"]!.count == 40)
    #expect(vanilla.earlyStop == nil)
    // Two sessions (killed, resumed an hour later): the pause does not count.
    let log = """
    2025-01-01T10:00:00Z training A
    2025-01-01T10:02:00Z step 10 | loss 1
    2025-01-01T11:00:00Z resumed from x at step 10
    2025-01-01T11:00:05Z training A
    2025-01-01T11:01:05Z done at step 20
    """
    #expect(RunRecord.wallSeconds(log: log) == 185 && RunRecord.wallSeconds(log: "no stamps here") == nil)
    // No log line (log.txt lost): the config's stop when the run got that far, none when it did not.
    #expect(RunRecord.earlyStop(log: "", config: ["enc-type": "x", "proj-coeff": "0.5", "early-stop-point": "20"], lastStep: 40) == 20)
    #expect(RunRecord.earlyStop(log: "", config: ["enc-type": "x", "proj-coeff": "0.5", "early-stop-point": "50"], lastStep: 40) == nil)
}

@Test func seedsShareOneCurveWithABandAndTheStopIsMarkedInTheGroupsColour() throws {
    let root = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let groups = RunGroup.group(try syntheticComparison(root).map { try RunRecord(loading: $0) })
    #expect(groups.map(\.name) == ["haste", "vanilla"] && groups[0].runs.count == 3)
    let curve = try groups[0].curve(.fid)!
    #expect(curve.points.map(\.step) == [10, 20, 30, 40] && curve.earlyStops == [20])
    #expect(curve.points[0].mean == 174 && curve.points[0].lower == 170 && curve.points[0].upper == 178)
    let (plot, notes) = try RunComparison.plot(groups, metric: .fid)
    #expect(notes.isEmpty)
    #expect(plot.legendLines == ["haste (mean of 3 seeds, band min-max)", "vanilla", "haste: alignment stops at step 20"])
    #expect(!plot.series[0].band.isEmpty && plot.series[1].band.isEmpty)
    try preview(plot, "compare-fid")
    let c = plot.render(), l = plot.layout
    let (hasteBand, vanillaBand) = (plot.series[0].bandColor, plot.series[1].bandColor)
    let between = (l.px(15) - 3)..<(l.px(15) + 4)                                       // between two FID points: 155-163
    #expect(count(c, hasteBand, x: between, y: l.py(163)..<(l.py(155) + 1)) > 20)
    #expect(count(c, vanillaBand, x: l.left..<l.right, y: l.top..<l.bottom) == 0)
    let stop = l.px(20)
    #expect(count(c, plot.series[0].color, x: stop..<(stop + 1), y: l.top..<l.py(182)) > 10)   // dashed column, above the curves (max 180)
    #expect(count(c, plot.series[0].color, x: 0..<c.width, y: (l.top - 14)..<(l.top - 2)) == 0)  // named in the legend only

    // One seed per group: no band anywhere; the legend still names the stop.
    let single = RunGroup.group([try RunRecord(loading: "\(root)/haste-seed1"), try RunRecord(loading: "\(root)/vanilla-seed0")])
    let one = try RunComparison.plot(single, metric: .fid).plot
    #expect(one.series.allSatisfy(\.band.isEmpty) && one.legendLines.count == 3)
    let render = one.render()
    #expect(count(render, one.series[0].bandColor, x: 0..<render.width, y: 0..<render.height) == 0)
}

@Test func alignmentTermsAreDrawnUpToTheStopAndOnlyForRunsThatHaveThem() throws {
    let root = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let dirs = try syntheticComparison(root)
    try writeSyntheticRun(root, name: "repa-seed0", seed: 0, attn: 0, fid: { 190 - Double($0) })
    let groups = RunGroup.group(try (dirs + ["\(root)/repa-seed0"]).map { try RunRecord(loading: $0) })
    let (proj, notes) = try RunComparison.plot(groups, metric: .projLoss, smoothing: 1)
    #expect(proj.series.map { $0.points.count } == [20, 40])                              // HASTE up to its stop; REPA throughout
    #expect(notes == ["note: 'vanilla' has no proj_loss term (no teacher, or its coefficient is 0): not drawn"])
    let (attn, attnNotes) = try RunComparison.plot(groups, metric: .attnLoss)
    #expect(attn.series.count == 1 && attnNotes.count == 2)
    let loss = try RunComparison.plot(groups, metric: .loss, smoothing: 4).plot
    #expect(loss.notes == ["curves: moving average over 4 steps"] && loss.series[1].points[3].y == (1 + 0.5 + 1.0 / 3 + 0.25) / 4)
    #expect(throws: HasteError.self) { try RunComparison.plot([groups[1]], metric: .projLoss) }
}

@Test func missingMetricsAndFoldersThatAreNoRunsAreNamed() throws {
    let root = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let run = try writeSyntheticRun(root, name: "nofid", seed: 0, fidEvery: 1000, fid: { _ in 0 })
    let groups = RunGroup.group([try RunRecord(loading: run)])
    do { _ = try RunComparison.plot(groups, metric: .fid); Issue.record("no FID accepted") } catch {
        #expect("\(error)".contains("run 'nofid' has no 'fid' values") && "\(error)".contains("it has: attn_loss, loss, proj_loss"), "\(error)")
        #expect("\(error)".contains("fid-every > 0"))
    }
    try FileManager.default.createDirectory(atPath: "\(root)/empty", withIntermediateDirectories: true)
    do { _ = try RunRecord(loading: "\(root)/empty"); Issue.record("a folder without metrics.jsonl accepted") } catch {
        #expect("\(error)".contains("not a run directory: it has no metrics.jsonl"), "\(error)")
    }
    #expect(throws: HasteError.self) { try RunRecord(loading: "\(root)/absent") }
    try "{\"step\": 1, \"loss\": 1}\nnot json\n".write(toFile: "\(root)/empty/metrics.jsonl", atomically: true, encoding: .utf8)
    do { _ = try RunRecord(loading: "\(root)/empty"); Issue.record("a broken metrics.jsonl accepted") } catch {
        #expect("\(error)".contains("line 2 is not a JSON object"), "\(error)")
    }
}

@Test func theTableGivesStepsToTheBaselinesFinalFIDAndTheSpreads() throws {
    let root = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let groups = RunGroup.group(try syntheticComparison(root).map { try RunRecord(loading: $0) })
    // vanilla ends at 120; HASTE's mean curve: 174, 144, 114, 84 → reaches 120 at step 30. Vanilla itself at 40.
    let rows = try RunComparison.rows(groups, baseline: try RunComparison.baseline(groups, name: nil))
    #expect(rows.map(\.stepsToBaseline) == [30, 40] && rows[0].finalFID.mean == 84 && rows[0].finalFID.std == 4)
    #expect(rows[0].seeds == [0, 1, 2] && rows[0].wallSeconds == 180 && rows[1].finalFID.std == nil)
    let text = try RunComparison.table(groups, noise: [10, 12, 14])
    #expect(text.contains("| haste | 0,1,2 | 40 | 84.0 ± 4.0 (80.0-88.0) | 30 | 1.33x | 3m00s |"), "\(text)")
    #expect(text.contains("| vanilla | 0 | 40 | 120.0 | 40 | 1.00x | 3m00s |"), "\(text)")
    #expect(text.contains("noise floor") && text.contains("3 draws): 12.0 ± 2.0 (10.0-14.0)") && text.contains("smaller than 8.0"), "\(text)")
    #expect(throws: HasteError.self) { try RunComparison.baseline([groups[0]], name: nil) }   // no vanilla group
    #expect(throws: HasteError.self) { try RunComparison.baseline(groups, name: "repa") }
    let slow = try RunComparison.table(groups, baselineName: "haste")
    #expect(slow.contains("| vanilla | 0 | 40 | 120.0 | not reached (best mean 120.0 at step 40) | - |"), "\(slow)")
    let file = "\(root)/noise.txt"
    try "# real vs real\n10.5\n\n11\n".write(toFile: file, atomically: true, encoding: .utf8)
    #expect(try RunComparison.readNumbers(file) == [10.5, 11])
    try "10\nfid\n".write(toFile: file, atomically: true, encoding: .utf8)
    #expect(throws: HasteError.self) { try RunComparison.readNumbers(file) }
}

/// The command end to end: a PNG of the plot's size, the default path printed, bad input refused with the reason.
@Test func hastePlotWritesAPNGAndRefusesBadInput() throws {
    let root = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let dirs = try syntheticComparison(root)
    let ok = try Launcher.run(["plot"] + dirs + ["--metric", "fid"], timeout: 120)
    #expect(ok.status == 0 && ok.stdout == "\(root)/compare-fid.png\n", "\(ok)")
    let image = try PNGImage.read("\(root)/compare-fid.png")
    #expect(image.width == 800 && image.height == 480 && image.channels == 3)
    let expected = try RunComparison.plot(RunGroup.group(try dirs.map { try RunRecord(loading: $0) }), metric: .fid).plot.render()
    #expect(image.pixels == expected.pixels)
    let loss = try Launcher.run(["plot"] + dirs + ["--metric", "loss", "--out", "\(root)/l.png"], timeout: 120)
    #expect(loss.status == 0, "\(loss)")
    #expect(try PNGImage.read("\(root)/l.png").width == 800)
    let table = try Launcher.run(["plot"] + dirs + ["--table"], timeout: 120)
    #expect(table.status == 0 && table.stdout.hasPrefix("| method | seeds |"), "\(table)")
    let bad = try Launcher.run(["plot", root, "--metric", "fid"], timeout: 120)
    #expect(bad.status != 0 && bad.stderr.contains("not a run directory"), "\(bad)")
    let metric = try Launcher.run(["plot", dirs[0], "--metric", "grad"], timeout: 120)
    #expect(metric.status == 64 && metric.stderr.contains("allowed: fid, loss, proj_loss, attn_loss"), "\(metric)")
    let out = try Launcher.run(["plot", dirs[0], "--out", "x.jpg"], timeout: 120)
    #expect(out.status == 64 && out.stderr.contains("ending in .png"), "\(out)")
}

/// configs/replicate: each passes start-up validation, and they differ from each other only in the method's keys.
@Test func replicateConfigsDifferOnlyInTheMethod() throws {
    let dir = "\(Launcher.root)/configs/replicate"
    var configs: [String: [String: Any]] = [:]
    for name in ["vanilla", "repa", "haste", "haste-nostop", "attn-only"] {
        let c = try TrainConfig.load(file: "\(dir)/\(name).yaml")
        #expect(c.expName == name && c.dataset == "fashion-mnist" && c.fidEvery > 0)
        configs[name] = try c.jsonDictionary()
    }
    func differences(_ a: String, _ b: String) -> Set<String> {
        Set(configs[a]!.keys.filter { "\(configs[a]![$0]!)" != "\(configs[b]![$0]!)" })
    }
    #expect(differences("haste", "haste-nostop") == ["exp-name", "early-stop-point"])
    #expect(differences("haste-nostop", "attn-only") == ["exp-name", "proj-coeff"])     // the follow-up run
    #expect(differences("haste", "repa") == ["exp-name", "early-stop-point", "attn-coeff"])
    #expect(differences("haste", "vanilla") == ["exp-name", "early-stop-point", "attn-coeff", "proj-coeff", "enc-type", "enc-weights"])
    let haste = try TrainConfig.load(file: "\(dir)/haste.yaml"), nostop = try TrainConfig.load(file: "\(dir)/haste-nostop.yaml")
    #expect(haste.usesTeacher && haste.earlyStopPoint < haste.maxTrainSteps && nostop.earlyStopPoint > nostop.maxTrainSteps)
    #expect(!(try TrainConfig.load(file: "\(dir)/vanilla.yaml")).usesTeacher)
    // The demo's setting: model, data, teacher and optimiser as configs/demo.yaml; the teacher file is shared.
    let demo = try TrainConfig.load(file: "\(Launcher.root)/configs/demo.yaml").jsonDictionary()
    let same = ["model", "hidden-size", "depth", "num-heads", "dataset", "batch-size", "learning-rate", "enc-weights", "teacher-depth", "encoder-depth"]
    for key in same { #expect("\(demo[key]!)" == "\(configs["haste"]![key]!)", "\(key)") }
}

/// Scripts/replicate.sh refuses a bad --methods or --stop before it builds or trains anything.
@Test func replicateScriptChecksItsArguments() throws {
    let script = "\(Launcher.root)/Scripts/replicate.sh"
    let methods = try Launcher.run(["--methods", "haste,bogus"], timeout: 60, executable: script)
    #expect(methods.status == 64 && methods.stderr.contains("unknown method 'bogus'") && methods.stderr.contains("attn-only"), "\(methods)")
    let stop = try Launcher.run(["--stop", "half"], timeout: 60, executable: script)
    #expect(stop.status == 64 && stop.stderr.contains("--stop must be a whole number"), "\(stop)")
}

@Test func fashionMNISTRangesAreCheckedAndSliceTheSplit() throws {
    for bad in ["fashion-mnist:t10k[5:2]", "fashion-mnist:t10k[a:5]", "fashion-mnist:t10k[0:5", "fashion-mnist:t10k[5]"] {
        do { _ = try FashionMNISTImages.openEvalSet(bad); Issue.record("\(bad) accepted") } catch {
            #expect("\(error)".contains("[first:end]"), "\(error)")
        }
    }
    guard fashionMNISTInstalled else { return }
    let part = try FashionMNISTImages.openEvalSet("fashion-mnist:t10k[5000:5003]")
    #expect(part.images?.count == 3)
    let whole = try FashionMNISTImages(split: "t10k")
    expectClose(try part.images!.images(1..<3), try whole.images(5001..<5003), atol: 0, rtol: 0)
    #expect(throws: HasteError.self) { try FashionMNISTImages.openEvalSet("fashion-mnist:t10k[9000:10001]") }
}
