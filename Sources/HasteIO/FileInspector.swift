import Foundation
import HasteTensor

/// What `haste inspect FILE` shows: one row per tensor and the file's metadata.
public struct InspectReport: Equatable, Sendable, Encodable {
    public struct Row: Equatable, Sendable, Encodable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public let byteCount: Int
        private enum CodingKeys: String, CodingKey { case name, dtype, shape, byteCount = "bytes" }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(dtype.rawValue, forKey: .dtype)
            try c.encode(shape, forKey: .shape)
            try c.encode(byteCount, forKey: .byteCount)
        }
    }

    public let file: String
    /// "safetensors", "npy", "npz", "png", "jpeg", or a `TorchCheckpoint.Format` ("pytorch", "torchscript", "pytorch-legacy").
    public let format: String
    public let tensors: [Row]
    public let metadata: [String: String]

    /// A table for people, or (`json`) one JSON object:
    /// `{"file", "format", "tensors": [{"name", "dtype", "shape", "bytes"}], "metadata": {…}}`.
    public func render(json: Bool) -> String {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            // Encoding strings, ints and arrays of them cannot fail.
            return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        }
        let total = tensors.reduce(0) { $0 + $1.byteCount }
        var lines = ["\(file): \(format), \(tensors.count) tensor\(tensors.count == 1 ? "" : "s"), "
                     + "\(InspectReport.humanBytes(total)) of data"]
        let cells = [["name", "dtype", "shape", "bytes"]]
            + tensors.map { [$0.name, $0.dtype.rawValue, "\($0.shape)", "\($0.byteCount)"] }
        let widths = (0..<4).map { col in cells.map { $0[col].count }.max() ?? 0 }
        for row in cells {
            let padded = (0..<3).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
            lines.append((padded + [String(repeating: " ", count: widths[3] - row[3].count) + row[3]])
                .joined(separator: "  "))
        }
        if !metadata.isEmpty { lines.append("metadata:") }
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            let flat = value.replacingOccurrences(of: "\n", with: "\\n")
            let shown = flat.count > 120 ? flat.prefix(117) + "... (\(value.count) characters)" : flat
            lines.append("  \(key): \(shown)")
        }
        return lines.joined(separator: "\n")
    }

    static func humanBytes(_ n: Int) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) bytes" : String(format: "%.1f %@", v, units[u])
    }
}

/// Reads the tensor list of a file without loading the tensors (the entry point of `haste inspect`); images are
/// decoded (their one "tensor" is the RGB pixel array). The format is recognised from the first bytes.
public enum FileInspector {
    /// `verify` also reads every tensor's data as a load would (zip CRCs, inflation, npy byte order, torch views
    /// against the expansion limit), so a damaged data section is reported here rather than at training time.
    public static func inspect(_ path: String, verify: Bool = false) throws -> InspectReport {
        let lower = path.lowercased()
        let head = try firstBytes(path)
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47]) || head.starts(with: [0xFF, 0xD8, 0xFF]) { return try inspectImage(path) }
        if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return try inspectHDF5(path, verify: verify) }
        if head.starts(with: TorchZip.localMagic) {
            let file = try MappedFile(path: path, kind: "a PyTorch or .npz file")
            let zip = try TorchZip(file: file)
            let isNpz = !zip.entries.contains { $0.name.hasSuffix("data.pkl") } && zip.entries.contains { $0.name.hasSuffix(".npy") }
            return isNpz ? try inspectNpz(path, verify: verify) : try inspectTorch(path, verify: verify)
        }
        if TorchCheckpoint.isTorchFile(path) { return try inspectTorch(path, verify: verify) }
        if lower.hasSuffix(".npy") || head.starts(with: NpyHeader.magic) {
            let h = try NpyFile.header(path)
            if verify { _ = try NpyFile.read(path) }
            let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            return InspectReport(file: path, format: "npy",
                                 tensors: [.init(name: name, dtype: h.dtype, shape: h.shape, byteCount: h.byteCount)],
                                 metadata: ["npy_version": h.version, "descr": h.descr,
                                            "fortran_order": h.fortranOrder ? "True" : "False"])
        }
        do {
            let f = try SafetensorsFile(path: path)
            if verify { _ = try f.tensors() }
            return InspectReport(file: path, format: "safetensors",
                                 tensors: f.entries.map { .init(name: $0.name, dtype: $0.dtype, shape: $0.shape,
                                                                byteCount: $0.byteCount) },
                                 metadata: f.metadata)
        } catch let HasteError.fileFormat(p, detail) where !lower.hasSuffix(".safetensors") {
            throw HasteError.fileFormat(path: p, detail: detail + " (haste inspect reads .safetensors, .npy, .npz and HDF5 (.h5) files, "
                                        + "PyTorch .pt/.pth/TorchScript files, and PNG and JPEG images)")
        }
    }

    /// Tensors of a torch file with their dotted paths; its other values (steps, args, hyper-parameters)
    /// as metadata. Nothing but the pickle is read unless `verify`.
    static func inspectTorch(_ path: String, verify: Bool) throws -> InspectReport {
        let c = try TorchCheckpoint(path: path)
        if verify { _ = try c.flatTensors() }
        let (tensors, values) = c.flatten()
        var metadata: [String: String] = [:]
        for (key, value) in values { metadata[key] = value.stringValue ?? value.description }
        return InspectReport(file: path, format: c.format.rawValue,
                             tensors: tensors.map { .init(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape, byteCount: $0.1.byteCount) },
                             metadata: metadata)
    }

    /// The arrays of an .npz archive (headers only unless `verify`); members that are not .npy files are listed
    /// as metadata.
    static func inspectNpz(_ path: String, verify: Bool) throws -> InspectReport {
        let npz = try NpzArchive(path: path)
        var rows: [InspectReport.Row] = [], compressed: [String] = []
        for key in npz.keys {
            let h = try npz.header(key)
            if verify { _ = try npz.tensor(key) }
            if try npz.dataOffset(key) == nil { compressed.append(key) }
            rows.append(.init(name: key, dtype: h.dtype, shape: h.shape, byteCount: h.byteCount))
        }
        return InspectReport(file: path, format: "npz", tensors: rows,
                             metadata: compressed.isEmpty ? [:] : ["deflated": compressed.joined(separator: ", ")])
    }

    /// The root datasets of an HDF5 file (the packed "haste-dataset-1" and "haste-coco-1" files): uint8, float32 and
    /// int64 ones as tensors, others (variable-length strings) named in the metadata; root attributes as metadata.
    static func inspectHDF5(_ path: String, verify: Bool) throws -> InspectReport {
        let file = try HDF5File.open(path)
        var rows: [InspectReport.Row] = [], other: [String] = [], metadata: [String: String] = [:]
        for name in try file.names(datasets: true) {
            guard let d = file.dataset(name) else { continue }
            guard let dtype = d.dtype else { other.append("\(name) \(d.shape)"); continue }
            if verify, d.shape.first ?? 1 > 0 {
                let rows = d.shape.isEmpty ? 1 : d.shape[0]
                for start in stride(from: 0, to: rows, by: 256) {
                    let n = Swift.min(256, rows - start)
                    var buf = [UInt8](repeating: 0, count: n * Swift.max(d.rowCount, 1) * dtype.byteSize)
                    try buf.withUnsafeMutableBytes { try file.rows(d, start: start, count: n, $0.baseAddress!, write: false) }
                }
            }
            rows.append(.init(name: name, dtype: dtype, shape: d.shape, byteCount: d.shape.reduce(1, *) * dtype.byteSize))
        }
        for name in try file.names(datasets: false) {
            metadata[name] = file.stringAttribute(name) ?? file.intAttribute(name).map(String.init) ?? "(not a string or integer)"
        }
        if !other.isEmpty { metadata["other datasets"] = other.joined(separator: ", ") }
        try file.close()
        return InspectReport(file: path, format: "hdf5", tensors: rows, metadata: metadata)
    }

    /// A PNG or JPEG decoded as the preprocessing reads it (Pillow's `convert("RGB")`): one uint8 [H, W, 3] row.
    static func inspectImage(_ path: String) throws -> InspectReport {
        let image = try ImageDecoder.decodeRGB(path: path)
        let isPNG = try firstBytes(path).starts(with: [0x89, 0x50, 0x4E, 0x47])
        let shape = [image.height, image.width, image.channels]
        return InspectReport(file: path, format: isPNG ? "png" : "jpeg",
                             tensors: [.init(name: "pixels", dtype: .uint8, shape: shape, byteCount: image.pixels.count)],
                             metadata: ["decoded": "RGB, as PIL Image.open(f).convert(\"RGB\")"])
    }

    /// Up to the first 8 bytes of the file (the format's magic number).
    private static func firstBytes(_ path: String) throws -> [UInt8] {
        let file = try MappedFile(path: path, kind: "a .safetensors, .npy, .npz, HDF5, PyTorch, PNG or JPEG file")
        return Array(file.bytes.prefix(8))
    }
}
