import Foundation
import Testing
@testable import HasteIO
@testable import HasteModels
@testable import HasteTensor
@testable import HasteTraining

/// A two-class tree of synthetic PNGs (odd sizes, so BOX halving and BICUBIC both run), plus bad inputs.
func makeSourceTree(_ root: String) throws -> [String] {
    let fm = FileManager.default
    for c in ["n01", "n02"] { try fm.createDirectory(atPath: "\(root)/\(c)", withIntermediateDirectories: true) }
    var good: [String] = []
    for (k, (w, h)) in [(523, 301), (300, 257), (257, 700)].enumerated() {
        var px = [UInt8](repeating: 0, count: w * h * 3)
        for i in 0..<(w * h) { px[3 * i] = UInt8(i % w % 256); px[3 * i + 1] = UInt8((i / w) % 256); px[3 * i + 2] = UInt8((i * 7 + k * 50) % 251) }
        let path = "\(root)/\(k == 2 ? "n02" : "n01")/img\(k).png"
        try PNGImage.write(px, height: h, width: w, channels: 3, to: path)
        good.append(path)
    }
    _ = fm.createFile(atPath: "\(root)/n01/empty.png", contents: Data())
    _ = fm.createFile(atPath: "\(root)/n02/notes.jpg", contents: Data("not an image".utf8))
    let png = try Data(contentsOf: URL(fileURLWithPath: good[0]))
    _ = fm.createFile(atPath: "\(root)/n02/truncated.png", contents: png.prefix(png.count / 3))
    _ = fm.createFile(atPath: "\(root)/n02/readme.txt", contents: Data("ignored: not an image extension".utf8))
    return good
}

/// convert + encode + pack on a tiny random VAE: reference names and dataset.json, bad files reported and
/// skipped, HDF5 and folder hold the same data (exactly), both loaders agree, and a rerun redoes nothing.
@Test func preprocessPipelineEndToEnd() throws {
    let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("haste-pre-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    let good = try makeSourceTree("\(tmp)/src")
    var o = PreprocessOptions()
    (o.source, o.dest, o.format, o.workers, o.batchSize, o.progress) = ("\(tmp)/src", "\(tmp)/out", .both, 2, 2, false)
    // Four levels (KL-f8 geometry: 32×32 latents, so the mid-block attention stays small), 4–8 channels.
    var cfg = AutoencoderKLConfig()
    (cfg.blockOutChannels, cfg.layersPerBlock, cfg.normGroups) = ([4, 4, 8, 8], 1, 4)
    let vae = try AutoencoderKL(cfg, seed: 3)
    let s = try Preprocessor(options: o, vae: vae).run()
    #expect(s.found == 6 && s.converted == 3 && s.failed == 3 && s.encoded == 3 && s.packed == 3)

    // Sorted order: n01/empty.png, n01/img0.png, n01/img1.png, n02/img2.png, n02/notes.jpg, n02/truncated.png.
    let out = "\(tmp)/out"
    let json = try String(contentsOfFile: "\(out)/vae-sd/dataset.json", encoding: .utf8)
    #expect(json == "{\"labels\": [[\"00000/img-mean-std-00000001.npy\", 0], [\"00000/img-mean-std-00000002.npy\", 0], [\"00000/img-mean-std-00000003.npy\", 1]]}")
    let report = try String(contentsOfFile: "\(out)/preprocess-report.tsv", encoding: .utf8)
    for bad in ["empty.png", "notes.jpg", "truncated.png"] { #expect(report.contains(bad), "report lacks \(bad)") }
    #expect(!report.contains("readme.txt"))

    // Crops are the ADM crop of the decoded source; moments are the VAE's posterior of the stored PNG.
    var crops: [[UInt8]] = []
    for (idx, path) in zip([1, 2, 3], good) {
        let png = try PNGImage.read("\(out)/images/\(ReferenceNames.image(idx))")
        #expect(png.pixels == admCenterCrop(try ImageDecoder.decodeRGB(path: path), size: 256).pixels)
        crops.append(png.pixels)
    }
    // The pipeline's first batch was items 1 and 2 (--batch-size 2): the same batch is encoded again. Not bit for
    // bit: the BLAS thread count is process-global and other tests (GemmTests) change it while this one runs, so
    // the two encodes need not split work alike (a fresh-clone run differed in the last bits). Float rounding only.
    let x = Tensor(crops[0] + crops[1], shape: [2, 256, 256, 3]).permuted([0, 3, 1, 2]).contiguous().to(.float32) / 127.5 - 1.0
    let (m, sd) = noGrad { vae.encode(x) }
    let want = Tensor.cat([m, sd], axis: 1)
    for k in 0..<2 {
        let stored = try NpyFile.read("\(out)/vae-sd/\(ReferenceNames.moments(k + 1))")
        expectClose(stored, want.narrowed(0, start: k, length: 1).squeezed(0).contiguous(), atol: 1e-5, rtol: 1e-4, "moments of image \(k + 1)")
    }

    let folder = try ReferenceLayoutDataset(root: out, numClasses: 2)
    let packed = try HDF5Dataset(path: "\(out)/dataset.h5", numClasses: 2)
    #expect(try packed.file.classNames() == ["n01", "n02"])
    #expect(try packed.file.filename(2) == "00000/img00000003.png")
    let (a, b) = (try folder.batch([2, 0, 1]), try packed.batch([2, 0, 1]))
    #expect(a.images!.scalars(as: UInt8.self) == b.images!.scalars(as: UInt8.self))
    #expect(a.x0.scalars(as: Float.self) == b.x0.scalars(as: Float.self) && a.x0.shape == b.x0.shape)
    #expect(a.labels.scalars(as: Int64.self) == b.labels.scalars(as: Int64.self))
    folder.readers = 3   // items read by several threads land in the same places
    let c = try folder.batch([2, 0, 1])
    #expect(c.images!.scalars(as: UInt8.self) == b.images!.scalars(as: UInt8.self) && c.x0.scalars(as: Float.self) == b.x0.scalars(as: Float.self))

    // A rerun finds everything done; a stray temporary file is not mistaken for output.
    _ = FileManager.default.createFile(atPath: "\(out)/images/00000/img00000004.png.tmp-1", contents: Data([1, 2]))
    let again = try Preprocessor(options: o, vae: vae).run()
    #expect(again.converted == 0 && again.alreadyConverted == 3 && again.encoded == 0 && again.alreadyEncoded == 3)
    #expect(!FileManager.default.fileExists(atPath: "\(out)/images/00000/img00000004.png.tmp-1"), "stale temporary removed")
    // PNGs are stored uncompressed as the reference writes them (zlib level 0): raw rows plus headers.
    let size = try FileManager.default.attributesOfItem(atPath: "\(out)/images/\(ReferenceNames.image(1))")[.size] as! Int
    #expect(size >= 256 * (1 + 256 * 3) && size < 256 * (1 + 256 * 3) + 2048, "level-0 PNG of \(size) bytes")
}

/// A source tree with one class folder has no labels (spec/data.md §1.1 step 2): dataset.json says null,
/// dataset.h5 stores −1, and both training loaders refuse with a message that says why and what to do.
@Test func unlabelledDatasetsAreRefusedClearly() throws {
    try withTemporaryDirectory { dir in
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(dir)/src/only", withIntermediateDirectories: true)
        try PNGImage.write([UInt8](repeating: 90, count: 300 * 260 * 3), height: 260, width: 300, channels: 3, to: "\(dir)/src/only/a.png")
        var o = PreprocessOptions()
        (o.source, o.dest, o.stage, o.progress) = ("\(dir)/src", "\(dir)/out", .convert, false)
        _ = try Preprocessor(options: o, vae: nil).run()
        #expect(try String(contentsOfFile: "\(dir)/out/images/dataset.json", encoding: .utf8) == "{\"labels\": null}")
        // The latent side as the encode stage would leave it, without running a VAE here.
        try fm.createDirectory(atPath: "\(dir)/out/vae-sd/00000", withIntermediateDirectories: true)
        try NpyFile.write(Tensor.zeros([8, 32, 32]), to: "\(dir)/out/vae-sd/00000/img-mean-std-00000000.npy")
        try "{\"labels\": null}".write(toFile: "\(dir)/out/vae-sd/dataset.json", atomically: true, encoding: .utf8)
        expectFileError("\(dir)/out/vae-sd/dataset.json", "no class labels") { _ = try ReferenceLayoutDataset(root: "\(dir)/out", numClasses: 1000) }
        let h5 = try HDF5DatasetFile.create("\(dir)/u.h5", count: 1, resolution: 256, momentChannels: 8, momentSide: 32, classNames: [])
        try h5.write(0, image: [UInt8](repeating: 0, count: 3 * 256 * 256), moments: [Float](repeating: 0, count: 8 * 32 * 32),
                     label: -1, filename: "00000/img00000000.png")
        try h5.close()
        expectFileError("\(dir)/u.h5", "no class labels") { _ = try HDF5Dataset(path: "\(dir)/u.h5", numClasses: 1000) }
    }
}

/// Real photographs arranged into class folders (Scripts/fetch_test_images.sh), with a truncated JPEG among them:
/// the bad file is reported with libjpeg's reason and skipped, labels follow the sorted folder names, the
/// 256² crop of rocket.jpg is within 1 level of Pillow's (fixture), and dataset.h5 holds exactly the folder data.
@Test(.enabled(if: testPhotos() != nil, "needs Scripts/fetch_test_images.sh"))
func realPhotoTreeWithACorruptJPEG() throws {
    try withTemporaryDirectory { dir in
        let fm = FileManager.default, photos = testPhotos()!
        for (cls, names) in [("n_cat", ["chelsea.png", "coffee.png"]), ("n_space", ["hubble_deep_field.jpg", "rocket.jpg"])] {
            try fm.createDirectory(atPath: "\(dir)/src/\(cls)", withIntermediateDirectories: true)
            for n in names { try fm.copyItem(atPath: "\(photos)/\(n)", toPath: "\(dir)/src/\(cls)/\(n)") }
        }
        let jpg = try Data(contentsOf: URL(fileURLWithPath: "\(photos)/rocket.jpg"))
        _ = fm.createFile(atPath: "\(dir)/src/n_space/broken.jpg", contents: jpg.prefix(jpg.count / 3))
        var o = PreprocessOptions()
        (o.source, o.dest, o.format, o.workers, o.progress) = ("\(dir)/src", "\(dir)/out", .both, 2, false)
        var cfg = AutoencoderKLConfig()
        (cfg.blockOutChannels, cfg.layersPerBlock, cfg.normGroups) = ([4, 4, 8, 8], 1, 4)
        let s = try Preprocessor(options: o, vae: try AutoencoderKL(cfg, seed: 5)).run()
        #expect(s.found == 5 && s.converted == 4 && s.failed == 1 && s.encoded == 4 && s.packed == 4)
        // Sorted: n_cat/chelsea, n_cat/coffee, n_space/broken (item 2, skipped), n_space/hubble, n_space/rocket.
        let report = try String(contentsOfFile: "\(dir)/out/preprocess-report.tsv", encoding: .utf8)
        #expect(report.contains("broken.jpg") && report.contains("Premature end of JPEG file"), "\(report)")
        let json = try String(contentsOfFile: "\(dir)/out/images/dataset.json", encoding: .utf8)
        #expect(json == #"{"labels": [["00000/img00000000.png", 0], ["00000/img00000001.png", 0], ["00000/img00000003.png", 1], ["00000/img00000004.png", 1]]}"#)
        let rocket = try PNGImage.read("\(dir)/out/images/00000/img00000004.png")
        let pil = try Fixture("preprocess_pil.safetensors")["rocket.crop256"].scalars(as: UInt8.self)
        #expect(maxDiff(rocket.pixels, pil) <= 1)
        let folder = try ReferenceLayoutDataset(root: "\(dir)/out", numClasses: 2)
        let packed = try HDF5Dataset(path: "\(dir)/out/dataset.h5", numClasses: 2)
        #expect(try packed.file.classNames() == ["n_cat", "n_space"])
        let (a, b) = (try folder.batch([3, 0, 2, 1]), try packed.batch([3, 0, 2, 1]))
        #expect(a.images!.scalars(as: UInt8.self) == b.images!.scalars(as: UInt8.self))
        #expect(a.x0.scalars(as: Float.self) == b.x0.scalars(as: Float.self))
        #expect(a.labels.scalars(as: Int64.self) == [1, 0, 1, 0] && b.labels.scalars(as: Int64.self) == [1, 0, 1, 0])
    }
}

/// A moments file that is not [2C, H, W] (a 0-dimensional array, an odd channel count) is refused when the
/// dataset opens, naming the file, instead of trapping in the first batch read.
@Test func malformedMomentsAreRefusedWhenTheDatasetOpens() throws {
    try withTemporaryDirectory { dir in
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(dir)/out/vae-sd/00000", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(dir)/out/images/00000", withIntermediateDirectories: true)
        try PNGImage.write([UInt8](repeating: 9, count: 8 * 8 * 3), height: 8, width: 8, channels: 3, to: "\(dir)/out/images/00000/img00000000.png")
        try #"{"labels": [["00000/img-mean-std-00000000.npy", 0]]}"#.write(toFile: "\(dir)/out/vae-sd/dataset.json", atomically: true, encoding: .utf8)
        let npy = "\(dir)/out/vae-sd/00000/img-mean-std-00000000.npy"
        for bad in [Tensor([Float(1)], shape: []), Tensor.zeros([7, 4, 4]), Tensor.zeros([8, 0, 4]), Tensor.zeros([8, 16])] {
            try NpyFile.write(bad, to: npy)
            expectFileError(npy, "expected [2C, H, W]") { _ = try ReferenceLayoutDataset(root: "\(dir)/out", numClasses: 2) }
        }
        try NpyFile.write(Tensor.zeros([8, 4, 4]), to: npy)
        #expect(try ReferenceLayoutDataset(root: "\(dir)/out", numClasses: 2).sampleShape == [4, 4, 4])
    }
}
