import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// Reference statistics computed once (`haste fid SAMPLES fashion-mnist:t10k` would otherwise re-run 10 000 images
/// through Inception on every call): kept in `<cache>/reference-stats/` as stats files (`StatsFile`, plus the
/// per-image pool rows precision/recall needs), keyed by (source, image count, SHA-256 of the weights, mode).
/// Every tensor carries a CRC-32 in the metadata; a damaged or mismatching entry is recomputed, never used.
public struct ReferenceStatsCache {
    public let directory: String
    /// SHA-256 of the Inception weights file, computed on first need (a run whose reference is a stats file
    /// never hashes the weights).
    private let weights: () throws -> String

    public init(directory: String = CacheDirectory.path() + "/reference-stats", weightsDigest: String) {
        (self.directory, weights) = (directory, { weightsDigest })
    }

    /// A cache for the weights at `weightsPath` (hashed once per file version, see `CacheDirectory.digest`).
    public init(weightsPath: String, cache: String = CacheDirectory.path()) {
        (directory, weights) = ("\(cache)/reference-stats", { try CacheDirectory.digest(ofFile: weightsPath, cache: cache) })
    }

    /// What names a reference set: `fashion-mnist:t10k` as written; a file by absolute path, size and modification
    /// time; a folder by absolute path and the names, sizes and times of its files (an edited set is a new key).
    public static func identity(of source: String) -> String {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: source, isDirectory: &isDirectory) else { return source }
        let path = URL(fileURLWithPath: source).standardizedFileURL.path
        func stamp(_ p: String) -> String {
            let a = try? fm.attributesOfItem(atPath: p)
            return "\((a?[.size] as? NSNumber)?.int64Value ?? -1)@\((a?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)"
        }
        guard isDirectory.boolValue else { return "\(path)|\(stamp(path))" }
        let names = ((try? fm.contentsOfDirectory(atPath: path)) ?? []).sorted()
        return "\(path)|" + SHA256.hex(Array(names.map { "\($0)=\(stamp("\(path)/\($0)"))" }.joined(separator: "\n").utf8))
    }

    /// The key text stored in the entry, and the entry's file: `<readable source>-<mode>-n<count>-<hash>.safetensors`.
    public func entry(source: String, count: Int, mode: InceptionInput) throws -> (key: String, path: String) {
        let key = "v1|source=\(ReferenceStatsCache.identity(of: source))|count=\(count)|weights=\(try weights())|mode=\(mode.rawValue)"
        let readable = String(((source as NSString).lastPathComponent).map { $0.isLetter || $0.isNumber ? $0 : "-" }.prefix(40))
        return (key, "\(directory)/\(readable)-\(mode.rawValue)-n\(count)-\(SHA256.hex(Array(key.utf8)).prefix(16)).safetensors")
    }

    /// What a lookup found.
    public enum Lookup {
        case hit(StatsFile, poolFeatures: Tensor)
        case miss
        /// The entry exists but cannot be trusted; the text says why (it is recomputed).
        case damaged(String)
    }

    public func load(key: String, path: String) -> Lookup {
        guard FileManager.default.fileExists(atPath: path) else { return .miss }
        do {
            let file = try SafetensorsFile(path: path)
            guard file.metadata["cache-key"] == key else { return .damaged("its key does not match this request") }
            var tensors: [String: Tensor] = [:]
            for name in ["mu", "sigma", "mu_s", "sigma_s", "pool_features"] where file.entry(name) != nil {
                let t = try file.tensor(name)
                guard file.metadata["crc32.\(name)"] == "\(t.crc32)" else { return .damaged("'\(name)' fails its CRC-32 check") }
                tensors[name] = t
            }
            let stats = try StatsFile.read(file, path: path, loaded: tensors)
            guard let rows = tensors["pool_features"], rows.shape == [stats.pool.count, stats.pool.dimension] else {
                return .damaged("no pool rows matching its \(stats.pool.count) images")
            }
            return .hit(stats, poolFeatures: rows)
        } catch {
            return .damaged("\(error)")
        }
    }

    /// Writes the entry atomically (a concurrent reader sees the old file or the new one, never half of one).
    public func store(_ stats: StatsFile, poolFeatures: Tensor, key: String, path: String) throws {
        try CacheDirectory.create(directory)
        var extra: [String: String] = ["cache-key": key]
        let rows = ("pool_features", poolFeatures.to(.float32)), statistics = stats.tensors
        for (name, t) in [rows] + statistics { extra["crc32.\(name)"] = "\(t.crc32)" }
        try stats.write(to: path, tensors: statistics, extraTensors: [rows], extraMetadata: extra)
    }
}
