import Foundation
import HasteIO
import HasteTensor

/// `arr_0` of an ADM sample or reference batch: uint8 [N, H, W, 3], streamed from the archive in batches.
public struct NpzImages: ImageSource {
    public let npz: NpzArchive
    public let key: String
    public let count: Int

    public init(_ npz: NpzArchive, key: String = "arr_0") throws {
        let h = try npz.header(key)
        guard h.dtype == .uint8, h.shape.count == 4, h.shape[3] == 3 else {
            throw HasteError.fileFormat(path: npz.path, detail: "'\(key)' is \(h.descr) \(h.shape); ADM batches hold uint8 "
                                        + "images [N, H, W, 3] (as sample.py's np.savez writes them)")
        }
        guard !h.shape.contains(0) else {
            throw HasteError.fileFormat(path: npz.path, detail: "'\(key)' is \(h.descr) \(h.shape): a batch with no images or "
                                        + "empty images; write at least one image of at least 1×1 pixels")
        }
        self.npz = npz
        self.key = key
        count = h.shape[0]
    }

    public func images(_ range: Range<Int>) throws -> Tensor {
        try npz.rows(key, range).permuted([0, 3, 1, 2]).contiguous()                  // (n, 3, H, W) uint8
    }
}

/// Every PNG of a folder in sorted name order (pytorch-fid's file list), decoded to RGB. All images must
/// have one size (pytorch-fid's DataLoader stacks them the same way).
public struct PNGFolder: ImageSource {
    public let directory: String
    public let files: [String]
    public var count: Int { files.count }

    public init(directory: String) throws {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw HasteError.fileFormat(path: directory, detail: "cannot list the folder: \(error.localizedDescription)")
        }
        let pngs = names.filter { $0.lowercased().hasSuffix(".png") }.sorted()
        let jpegs = names.filter { ["jpg", "jpeg"].contains(($0 as NSString).pathExtension.lowercased()) }
        guard !pngs.isEmpty else {
            let hint = jpegs.isEmpty ? "" : " (\(jpegs.count) JPEG files found: haste reads PNG only; convert them first)"
            throw HasteError.fileFormat(path: directory, detail: "no .png images in the folder\(hint)")
        }
        self.directory = directory
        files = pngs.map { "\(directory)/\($0)" }
    }

    public func images(_ range: Range<Int>) throws -> Tensor {
        guard let firstPath = files[range].first else { return Tensor(Array<UInt8>(), shape: [0, 3, 0, 0]) }
        let first = try PNGImage.read(firstPath), (h, w) = (first.height, first.width)
        var pixels = [UInt8](repeating: 0, count: range.count * 3 * h * w)
        try pixels.withUnsafeMutableBufferPointer { out in
            for (k, path) in files[range].enumerated() {
                let img = k == 0 ? first : try PNGImage.read(path)
                guard (img.height, img.width) == (h, w) else {
                    throw HasteError.fileFormat(path: path, detail: "\(img.height)×\(img.width) while \(firstPath) is "
                                                + "\(h)×\(w): the images of a folder must share one size")
                }
                img.copyCHW(to: out.baseAddress! + k * 3 * h * w)
            }
        }
        return Tensor(pixels, shape: [range.count, 3, h, w])   // (n, 3, H, W) uint8
    }
}
