import Foundation
import HasteDiffusion
import HasteIO
import HasteTensor

/// The caption of every sample of a text-to-image generation run (`haste generate --prompt/--prompts-file/
/// --coco-captions`), a function of the sample index alone, so shards and resumed runs agree on it:
/// - prompts: sample i gets prompt i mod P (the samples cycle through the prompts);
/// - COCO (the COCO-30K FID protocol, spec/sampling.md §7): the images that have captions, by ascending image id
///   (the reference's feature order); sample i gets image i mod M and, of that image's captions in the annotation
///   file's order, caption `SampleNoise.streamSeed(~seed, i) mod count` — one caption per sample, chosen by the
///   seed (the reference picks one at random per image with Python's `random`).
public struct CaptionPlan: Sendable {
    public enum Source: Sendable, Equatable {
        case prompts
        case coco(annotations: String)
    }
    public let source: Source
    /// Prompts, or per COCO image (ascending id) its id and captions.
    let prompts: [String]
    let images: [(id: Int, captions: [String])]
    let seed: UInt64

    public var isCOCO: Bool { if case .coco = source { true } else { false } }
    /// Number of distinct prompts (P) or COCO images (M).
    public var period: Int { isCOCO ? images.count : prompts.count }

    /// Samples cycle through `prompts`; each must be non-empty.
    public init(prompts: [String]) throws {
        guard !prompts.isEmpty else { throw HasteError.config(key: "prompt", detail: "no prompts given") }
        if let i = prompts.firstIndex(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) {
            throw HasteError.config(key: "prompt", detail: "prompt \(i + 1) is empty; an empty prompt is the unconditional context, give a text")
        }
        (source, self.prompts, images, seed) = (.prompts, prompts, [], 0)
    }

    /// One prompt per line of `path` (a final newline ends the last line; CRLF accepted); empty lines are refused
    /// with their line number.
    public static func promptsFile(_ path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "--prompts-file must name a text file with one prompt per line.")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw HasteError.fileFormat(path: path, detail: "is not UTF-8 text (expected one prompt per line)")
        }
        var lines = text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { String(String.UnicodeScalarView($0)) }
        if lines.last == "" { lines.removeLast() }
        let prompts = lines.map { $0.unicodeScalars.last == "\r" ? String(String.UnicodeScalarView($0.unicodeScalars.dropLast())) : $0 }
        guard !prompts.isEmpty else { throw HasteError.fileFormat(path: path, detail: "is empty (expected one prompt per line)") }
        if let i = prompts.firstIndex(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) {
            throw HasteError.fileFormat(path: path, detail: "line \(i + 1) is empty: give one prompt per line, with no blank lines")
        }
        return prompts
    }

    /// The captions of a COCO annotations file (`annotations/captions_val2014.json`: `annotations` =
    /// [{image_id, id, caption}, …]); `seed` chooses each sample's caption.
    public init(cocoAnnotations path: String, seed: UInt64) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HasteError.fileMissing(path: path, hint: "--coco-captions must name COCO's annotations/captions_val2014.json (from annotations_trainval2014.zip).")
        }
        // The same reading as `haste preprocess --coco`; images without a caption take no sample.
        let withCaptions = try COCOAnnotations(data: data, path: path, fileNames: false).images.filter { !$0.captions.isEmpty }
        guard !withCaptions.isEmpty else {
            throw HasteError.fileFormat(path: path, detail: "has no caption annotations (expected COCO caption annotations such as annotations/captions_val2014.json)")
        }
        (source, prompts, self.seed) = (.coco(annotations: path), [], seed)
        images = withCaptions.map { ($0.id, $0.captions) }
    }

    /// Sample `index`'s caption and, for COCO, its image id.
    public func caption(_ index: Int) -> (text: String, imageID: Int?) {
        guard isCOCO else { return (prompts[index % prompts.count], nil) }
        let image = images[index % images.count]
        let k = Int(SampleNoise.streamSeed(~seed, index: index) % UInt64(image.captions.count))
        return (image.captions[k], image.id)
    }

    /// The texts to encode once for the whole run (prompts), or nil when captions are encoded batch by batch (COCO).
    public var fixedTexts: [String]? { isCOCO ? nil : prompts }

    /// `{"index": i, "image_id": id, "caption": text}` per line for samples 0..<count (no image_id for prompts):
    /// which caption each PNG `<index:06d>.png` was generated from.
    public func table(count: Int) -> String {
        var out = ""
        for i in 0..<count {
            let (text, id) = caption(i)
            let caption = String(decoding: try! JSONSerialization.data(withJSONObject: text, options: [.fragmentsAllowed, .withoutEscapingSlashes]), as: UTF8.self)
            out += "{\"index\": \(i), " + (id.map { "\"image_id\": \($0), " } ?? "") + "\"caption\": \(caption)}\n"
        }
        return out
    }
}
