import Foundation
import HasteIO
import HasteTensor

/// The packed MS-COCO features ("haste-coco-1"), written by `haste preprocess --coco … --format hdf5|both` (or
/// `--coco-import … --format hdf5`): the items of one split of the reference folder (spec/data.md §2.1) in one file.
///
/// Root attributes: `format` = "haste-coco-1", `resolution` (int), `split` (string). Datasets:
/// `images` uint8 [N, 3, R, R]; `moments` float32 [N, 8, R/8, R/8] (mean | log-variance, not clamped);
/// `image_ids` int64 [N] (COCO image ids, ascending; −1 when imported from a folder without its annotations);
/// `caption_offsets` int64 [N + 1] (captions of image i are rows offsets[i] ..< offsets[i + 1] of `captions`,
/// in annotation-list order); `captions` float32 [M, 77, D]; `empty_context` float32 [77, D].
public final class COCOFeatureFile: CaptionFeatureSource {
    public static let formatTag = "haste-coco-1"
    public let file: HDF5File
    public var path: String { file.path }
    public let count: Int, resolution: Int
    public let split: String
    public let imageIDs: [Int64]
    let offsets: [Int64]
    let images: HDF5File.Dataset, momentsSet: HDF5File.Dataset, captions: HDF5File.Dataset
    public let momentShape: [Int], contextShape: [Int]
    public let emptyContext: Tensor

    public init(path: String) throws {
        let file = try HDF5File.open(path)
        self.file = file
        func bad(_ d: String) -> HasteError { .fileFormat(path: path, detail: d) }
        guard file.stringAttribute("format") == Self.formatTag else {
            let tag = file.stringAttribute("format").map { "format \"\($0)\"" } ?? "no format attribute"
            throw bad("\(tag), expected \"\(Self.formatTag)\": not packed COCO features (write them with `haste preprocess --coco ANNOTATIONS.json … --format hdf5`)")
        }
        func need(_ name: String, _ dtype: DType, rank: Int) throws -> HDF5File.Dataset {
            guard let d = file.dataset(name) else { throw bad("no /\(name) dataset (an incomplete file? rerun the packing)") }
            guard d.dtype == dtype, d.shape.count == rank else { throw bad("/\(name) is \(d.dtype.map { "\($0)" } ?? "another type") \(d.shape), expected \(dtype) of rank \(rank)") }
            return d
        }
        images = try need("images", .uint8, rank: 4)
        momentsSet = try need("moments", .float32, rank: 4)
        captions = try need("captions", .float32, rank: 3)
        let ids = try need("image_ids", .int64, rank: 1), offs = try need("caption_offsets", .int64, rank: 1)
        let empty = try need("empty_context", .float32, rank: 2)
        count = images.shape[0]
        resolution = images.shape[2]
        split = file.stringAttribute("split") ?? ""
        momentShape = Array(momentsSet.shape.dropFirst())
        contextShape = Array(captions.shape.dropFirst())
        guard images.shape[1] == 3, images.shape[3] == resolution, momentsSet.shape[0] == count, ids.shape[0] == count,
              offs.shape[0] == count + 1, empty.shape == contextShape else {
            throw bad("inconsistent shapes: images \(images.shape), moments \(momentsSet.shape), image_ids \(ids.shape), caption_offsets \(offs.shape), captions \(captions.shape), empty_context \(empty.shape)")
        }
        imageIDs = try file.read(ids, as: Int64.self)
        let offsets = try file.read(offs, as: Int64.self), m = Int64(captions.shape[0])
        self.offsets = offsets
        if offsets.first != 0 || offsets.last != m || zip(offsets, offsets.dropFirst()).contains(where: { $0 >= $1 }) {
            let i = (0..<offsets.count - 1).first { offsets[$0] >= offsets[$0 + 1] }
            throw bad("/caption_offsets must rise from 0 to \(m) by at least 1 per image" + (i.map { " (image \($0) has none)" } ?? ""))
        }
        emptyContext = Tensor(try file.read(empty, as: Float.self), shape: contextShape)
    }

    public func captionCount(_ i: Int) -> Int { Int(offsets[i + 1] - offsets[i]) }

    func rows<T: Numeric & HostScalar>(_ d: HDF5File.Dataset, _ row: Int, as: T.Type) throws -> Tensor {
        Tensor(try file.read(d, start: row, count: 1, as: T.self), shape: Array(d.shape.dropFirst()))
    }

    public func image(_ i: Int) throws -> Tensor { try rows(images, check(i), as: UInt8.self) }
    public func moments(_ i: Int) throws -> Tensor { try rows(momentsSet, check(i), as: Float.self) }
    public func caption(_ i: Int, _ k: Int) throws -> Tensor {
        require(k >= 0 && k < captionCount(check(i)), "COCOFeatureFile.caption: caption \(k) of image \(i), which has \(captionCount(i))")
        return try rows(captions, Int(offsets[i]) + k, as: Float.self)
    }

    private func check(_ i: Int) -> Int {
        require(i >= 0 && i < count, "COCOFeatureFile: image \(i) of \(count)")
        return i
    }

    /// Writes a file item by item (in idx order) through `<path>.tmp`, renamed into place by `finish` so that a
    /// file at `path` is always complete.
    public final class Writer {
        public let path: String
        let tmp: String
        let file: HDF5File
        let images: HDF5File.Dataset, moments: HDF5File.Dataset, captions: HDF5File.Dataset
        let ids: HDF5File.Dataset, offsets: HDF5File.Dataset, empty: HDF5File.Dataset
        var written = 0, captionRows: [Int64] = [0], imageIDs: [Int64] = []

        public init(path: String, count: Int, captions m: Int, resolution r: Int, momentShape: [Int], contextShape: [Int], split: String) throws {
            (self.path, tmp) = (path, path + ".tmp")
            file = try HDF5File.create(tmp)
            try file.setAttribute("format", COCOFeatureFile.formatTag)
            try file.setAttribute("resolution", r)
            try file.setAttribute("split", split)
            images = try file.createDataset("images", dtype: .uint8, shape: [count, 3, r, r])
            moments = try file.createDataset("moments", dtype: .float32, shape: [count] + momentShape)
            captions = try file.createDataset("captions", dtype: .float32, shape: [m] + contextShape)
            ids = try file.createDataset("image_ids", dtype: .int64, shape: [count], chunk: [Swift.min(Swift.max(count, 1), 65536)])
            offsets = try file.createDataset("caption_offsets", dtype: .int64, shape: [count + 1], chunk: [Swift.min(count + 1, 65536)])
            empty = try file.createDataset("empty_context", dtype: .float32, shape: contextShape, chunk: contextShape)
        }

        /// The next item: image uint8 [3, R, R], moments float32, its captions float32 [n, 77, D] (n ≥ 1).
        public func append(image: Tensor, moments m: Tensor, captions c: Tensor, imageID: Int64) throws {
            require(c.rank == 3 && c.shape[0] >= 1, "COCOFeatureFile.Writer: captions \(c.shape)")
            try file.write(images, start: written, image.to(.uint8).contiguous().scalars(as: UInt8.self))
            try file.write(moments, start: written, m.to(.float32).contiguous().scalars(as: Float.self))
            try file.write(captions, start: Int(captionRows.last!), c.to(.float32).contiguous().scalars(as: Float.self))
            captionRows.append(captionRows.last! + Int64(c.shape[0]))
            imageIDs.append(imageID)
            written += 1
        }

        /// Writes the index and the empty context, closes, and renames into place.
        public func finish(emptyContext: Tensor) throws {
            do {
                guard written == images.shape[0], captionRows.last! == Int64(captions.shape[0]) else {
                    throw HasteError.fileFormat(path: path, detail: "packing stopped after \(written) of \(images.shape[0]) images")
                }
                try file.write(ids, start: 0, imageIDs)
                try file.write(offsets, start: 0, captionRows)
                try file.write(empty, start: 0, emptyContext.to(.float32).contiguous().scalars(as: Float.self))
                try file.close()
            } catch {
                abandon()
                throw error
            }
            guard rename(tmp, path) == 0 else { throw HasteError.fileFormat(path: path, detail: "cannot move \(tmp) into place (errno \(errno))") }
        }

        /// Closes and deletes the temporary file.
        public func abandon() {
            try? file.close()
            unlink(tmp)
        }
    }
}
