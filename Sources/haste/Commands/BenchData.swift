import ArgumentParser
import Foundation
import HasteTensor
import HasteTraining

/// `haste bench data`: training-batch reads from a dataset made by `haste preprocess --format both`, the reference
/// folder layout (images/*.png + vae-sd/*.npy, two files per item) against the packed dataset.h5, over the same
/// shuffled batches (one `TrainingDataset.batch` call each, as the trainer makes them).
struct BenchDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Time training-batch reads: folder layout vs packed dataset.h5.")

    @Option(help: "A folder written by `haste preprocess` (images/ + vae-sd/, and/or dataset.h5).") var dataDir: String
    @Option(help: "folder | hdf5 | both") var format = "both"
    @Option(help: "Items per batch.") var batchSize = 64
    @Option(help: "Timed batches per format (after one untimed batch).") var batches = 10
    @Option(help: "Labels must be below this.") var numClasses = 1000
    @Option(help: "Shuffling seed.") var seed: UInt64 = 0
    @Option(help: "Threads reading one batch of the folder layout (default: as the trainer, half the cores, 1–8); HDF5 reads are serial (libhdf5 is not thread-safe).")
    var readers: Int?
    @Flag(help: "Print JSON {rows: [{format, items, seconds, items_per_s, mb_per_s, ms_per_batch_median}]}.") var json = false

    func validate() throws {
        guard ["folder", "hdf5", "both"].contains(format) else { throw ValidationError("--format must be folder, hdf5 or both") }
        guard batchSize >= 1, batches >= 1 else { throw ValidationError("--batch-size and --batches must be ≥ 1") }
        guard (readers ?? 1) >= 1 else { throw ValidationError("--readers must be ≥ 1") }
    }

    func run() throws {
        var sets: [(String, TrainingDataset)] = []
        var folderReaders = 1
        if format != "hdf5" {
            let folder = try ReferenceLayoutDataset(root: dataDir, numClasses: numClasses)
            if let readers { folder.readers = readers }
            folderReaders = folder.readers
            sets.append(("folder", folder))
        }
        if format != "folder" { sets.append(("hdf5", try HDF5Dataset(path: "\(dataDir)/dataset.h5", numClasses: numClasses))) }
        if sets.count == 2 && sets[0].1.count != sets[1].1.count {
            throw ValidationError("\(dataDir): images/+vae-sd/ hold \(sets[0].1.count) items but dataset.h5 holds \(sets[1].1.count); rerun `haste preprocess --format both`")
        }
        var rows: [[String: Any]] = []
        for (name, set) in sets {
            guard set.count >= batchSize else {
                throw ValidationError("\(dataDir) (\(name)) has \(set.count) items, fewer than --batch-size \(batchSize)")
            }
            let order = EpochOrder(count: set.count, batchSize: batchSize, seed: seed)
            let per = order.batchesPerEpoch
            _ = try set.batch(order.indices(epoch: 0, batch: 0))   // warm-up: opens files, faults in code
            var times: [Double] = [], bytes = 0
            let start = Date()
            for k in 1...batches {
                let t0 = Date()
                let b = try set.batch(order.indices(epoch: k / per, batch: k % per))
                times.append(Date().timeIntervalSince(t0))
                bytes += (b.images?.count ?? 0) + b.x0.count * 4
            }
            let secs = Date().timeIntervalSince(start), items = batches * batchSize
            rows.append(["format": name, "items": items, "seconds": secs, "items_per_s": Double(items) / secs,
                         "mb_per_s": Double(bytes) / secs / 1e6, "ms_per_batch_median": 1000 * times.sorted()[times.count / 2]])
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: ["rows": rows], options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("haste bench data: \(dataDir), \(batches) batches of \(batchSize) per format; folder: \(folderReaders) reader thread(s), hdf5: 1")
        for r in rows {
            print(String(format: "%-7@ %8.1f items/s  %7.1f MB/s  %7.2f ms/batch (median)", r["format"] as! String,
                         r["items_per_s"] as! Double, r["mb_per_s"] as! Double, r["ms_per_batch_median"] as! Double))
        }
        if rows.count == 2 {
            print(String(format: "hdf5 / folder throughput: %.2fx", (rows[1]["items_per_s"] as! Double) / (rows[0]["items_per_s"] as! Double)))
        }
    }
}
