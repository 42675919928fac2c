import Foundation
import Testing
import HasteIO
import HasteTensor
@testable import HasteTraining

/// Issue #17: `haste train` writes TensorBoard event files beside metrics.jsonl (scalars every step, sample grids
/// as images, rank 0 only), `--report-to` picks the files. Event files are decoded by the tests' own reader.
@Suite(.serialized)
struct TensorBoardRunTests {
    /// 8 random 16×16 PNGs in 3 classes with their dataset.json (`dataset: images`).
    static func imageFolder(_ dir: String) throws -> String {
        let root = "\(dir)/data"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let pixels = Tensor.rand([8 * 16 * 16 * 3], seed: 17).scalars(as: Float.self).map { UInt8($0 * 255) }
        var labels: [String] = []
        for i in 0..<8 {
            try PNGImage.write(Array(pixels[(i * 768)..<((i + 1) * 768)]), height: 16, width: 16, channels: 3, to: "\(root)/img\(i).png")
            labels.append("[\"img\(i).png\", \(i % 3)]")
        }
        try "{\"labels\": [\(labels.joined(separator: ", "))]}".write(toFile: "\(root)/dataset.json", atomically: true, encoding: .utf8)
        return root
    }

    /// A tiny vanilla SiT (no teacher) on `imageFolder`: previews every 2 steps (and at steps 1 and the last).
    static func train(_ dir: String, _ name: String, steps: Int, _ extra: [String] = []) throws -> String {
        let args = ["train", "--set", "dataset=images", "--data-dir", "\(dir)/data", "--num-classes", "3", "--resolution", "16",
                    "--model", "SiT-S/2", "--set", "hidden-size=16", "--set", "depth=2", "--set", "num-heads=2", "--encoder-depth", "1", "--set", "projector-dim=8",
                    "--enc-type", "none", "--batch-size", "4", "--max-train-steps", "\(steps)", "--checkpointing-steps", "2",
                    "--sampling-steps", "2", "--set", "sample-count=4", "--set", "sample-num-steps=2", "--threads", "1",
                    "--output-dir", dir, "--exp-name", name] + extra
        let r = try runHaste(args)
        #expect(r.status == 0, "haste train \(name): \(r.stderr.suffix(2000))")
        return "\(dir)/\(name)"
    }

    @Test func trainWritesEventFilesHoldingMetricsAndSampleGrids() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Self.imageFolder(dir)
        let run = try Self.train(dir, "tb", steps: 3)
        #expect(try TFEventReader.eventFiles(inRun: run).count == 1)
        // Killed after its step-2 checkpoint and resumed to step 4: a second file, sorting after the first.
        _ = try Self.train(dir, "tb", steps: 4, ["--resume-step", "2"])
        let files = try TFEventReader.eventFiles(inRun: run)
        #expect(files.count == 2, "\(files)")
        let host = files.first.map { String($0.split(separator: ".")[4]) } ?? "?"
        for name in files {
            let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            // events.out.tfevents.<10-digit seconds>.<host>.<pid>.<n> (host names may hold dots)
            #expect(parts.count >= 7 && parts[3].count == 10 && Int(parts[3]) != nil && Int(parts[parts.count - 2]) != nil
                    && parts.last == "0" && name.contains(".\(host)."), "\(name)")
            let events = try TFEventReader.events(file: "\(run)/\(name)")
            #expect(events.first?.fileVersion == "brain.Event:2" && events.first?.writer == "haste", "\(name) starts with its version")
            // then the step this process starts at (the resumed file: 3), which hides the old file's steps from there
            #expect(events.count > 1 && events[1].sessionStart && events[1].step == (name == files[0] ? 1 : 3), "\(name)")
            #expect(events.allSatisfy { $0.wallTime > 1.7e9 })
        }

        // The scalars TensorBoard shows (the resumed file replaces step 3) are metrics.jsonl's, rounded to float32.
        let rows = try metrics(run), scalars = try TFEventReader.scalars(inRun: run)
        #expect(rows.map { $0["step"] as! Int } == [1, 2, 3, 4])
        let tags = ["loss": "train/loss", "proj_loss": "train/proj_loss", "attn_loss": "train/attn_loss", "lr": "train/lr",
                    "total_loss": "train/total_loss", "grad_norm": "train/grad_norm", "img_per_s": "perf/img_per_s"]
        #expect(Set(rows[0].keys) == Set(tags.keys).union(["step"]), "\(rows[0].keys.sorted())")
        #expect(Set(scalars.keys) == Set(tags.values), "\(scalars.keys.sorted())")
        for (key, tag) in tags {
            let jsonl = rows.map { ($0["step"] as! Int, Float(($0[key] as! NSNumber).doubleValue)) }
            let tb = scalars[tag] ?? []
            #expect(tb.map(\.step) == jsonl.map(\.0), "\(tag) steps")
            #expect(tb.map(\.value.bitPattern) == jsonl.map(\.1.bitPattern), "\(tag): \(tb.map(\.value)) vs \(jsonl.map(\.1))")
        }
        #expect(scalars["train/lr"]?.first?.value == 1e-4 && scalars["train/loss"]!.allSatisfy { $0.value > 0 })

        // Sample grids: steps 1, 2, 3 (first file), 4 (resumed), each the PNG in samples/.
        var images: [Int] = []
        for name in files {
            for e in try TFEventReader.events(file: "\(run)/\(name)") {
                for v in e.values where v.image != nil {
                    images.append(e.step)
                    let png = Array(try Data(contentsOf: URL(fileURLWithPath: "\(run)/samples/\(String(format: "%07d", e.step)).png")))
                    let image = v.image!, decoded = try PNGImage.decode(Data(png), path: "grid")
                    #expect(v.tag == "samples/ema" && image.png == png && image.colorspace == 3)
                    #expect(image.height == decoded.height && image.width == decoded.width && image.height == 2 * 16 + 3 * 2)
                }
            }
        }
        #expect(images == [1, 2, 3, 4])
    }

    @Test func reportToChoosesTheFiles() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Self.imageFolder(dir)
        let fm = FileManager.default
        let none = try Self.train(dir, "none", steps: 1, ["--report-to", "none"])
        #expect(try TFEventReader.eventFiles(inRun: none).isEmpty && !fm.fileExists(atPath: "\(none)/metrics.jsonl"))
        #expect(fm.fileExists(atPath: "\(none)/log.txt") && fm.fileExists(atPath: "\(none)/samples/0000001.png"), "log and samples stay")
        let jsonl = try Self.train(dir, "jsonl", steps: 1, ["--report-to", "jsonl"])
        #expect(try TFEventReader.eventFiles(inRun: jsonl).isEmpty && metrics(jsonl).count == 1)
        let tb = try Self.train(dir, "tb", steps: 1, ["--set", "report-to=tensorboard"])
        #expect(try TFEventReader.eventFiles(inRun: tb).count == 1 && !fm.fileExists(atPath: "\(tb)/metrics.jsonl"))
        #expect(try TFEventReader.scalars(inRun: tb)["train/loss"]?.map(\.step) == [1])
    }

    @Test func reportToValuesAreCheckedAndWandbIsExplained() throws {
        let bad = try runHaste(["train", "--print-config", "--report-to", "tensorbord"])
        #expect(bad.status != 0 && bad.stderr.contains("config key 'report-to': unknown value 'tensorbord'; allowed: all, tensorboard, jsonl, none"), "\(bad.stderr)")
        let set = try runHaste(["train", "--print-config", "--set", "report-to=wandb"])
        #expect(set.status != 0 && set.stderr.contains("wandb is not supported") && set.stderr.contains("tensorboard --logdir"), "\(set.stderr)")
        let wandb = try runHaste(["train", "--print-config", "--report-to", "wandb"])
        #expect(wandb.status == 0 && wandb.stderr.contains("haste: note: --report-to wandb is not supported"), "\(wandb.stderr)")
        #expect(wandb.stderr.contains("instead (--report-to all)"))
    }

    /// A full disk under the event file is the run directory's write failure (the trainer stops cleanly on it,
    /// RunDirectoryTests), naming the file; the records before it stay whole.
    @Test func aFailedEventWriteIsTheRunsWriteFailure() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = try RunDirectory(root: "\(dir)/run")
        run.metric(step: 1, values: ["loss": 0.5])
        let path = try #require(run.events.path)
        let written = try TFEventReader.events(file: path)
        #expect(run.writeFailure == nil && written.count == 3, "version, start, step 1")
        try FileManager.default.moveItem(atPath: path, toPath: "\(dir)/kept")
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "/dev/full")
        run.metric(step: 2, values: ["loss": 0.25])
        #expect(run.writeFailure == .fileFormat(path: path, detail: "cannot append: No space left on device"), "\(String(describing: run.writeFailure))")
    }

    @Test func eventFileNamesSortAfterTheFilesAlreadyThereAndTagsGroupMetrics() {
        let name = { (existing: [String]) in TensorBoardLog.fileName(seconds: 1_700_000_000, host: "h", pid: 7, n: 0, existing: existing) }
        #expect(name([]) == "events.out.tfevents.1700000000.h.7.0")
        #expect(name(["events.out.tfevents.1700000000.h.99999.0", "metrics.jsonl"]) == "events.out.tfevents.1700000001.h.7.0")
        #expect(name(["events.out.tfevents.1699999999.h.1.0"]) == "events.out.tfevents.1700000000.h.7.0")
        #expect(["loss", "fid", "img_per_s", "mmdit_loss"].map(TensorBoardLog.tag) == ["train/loss", "eval/fid", "perf/img_per_s", "train/mmdit_loss"])
    }
}
