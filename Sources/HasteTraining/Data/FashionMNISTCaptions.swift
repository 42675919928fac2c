import Foundation
import HasteIO
import HasteModels
import HasteTensor

/// The offline text-to-image demo's data: Fashion-MNIST (pixel space, [1, 32, 32]) with captions made from the class
/// names and a few templates, encoded once at start-up by a CLIP-architecture text encoder (`TextEncoderSetup`:
/// the demo's random frozen one, or real weights). Each epoch every image gets one template, chosen per
/// (seed, epoch, item); the CFG drop replaces it by the empty caption's features.
public final class FashionMNISTCaptions: CaptionedDataset {
    /// `{}` is replaced by the class name.
    public static let templates = ["a photo of a {}", "a {}, product shot", "a black and white picture of a {}", "a small picture of a {}"]
    /// Class names as they read in a caption (index = Fashion-MNIST label).
    public static let classNames = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]

    public let base: FashionMNIST
    public let choice: CaptionChoice
    /// Every distinct caption, template-major: `captions[t·10 + c]` is template t of class c.
    public let captions: [String]
    /// Their features, with the empty caption's as the last row: [captions + 1, 77, D].
    let table: Tensor
    public let emptyContext: Tensor
    public let textEncoderToSave: CLIPTextModel?
    public var numClasses: Int { base.numClasses }
    public var sampleShape: [Int] { base.sampleShape }
    public let hasImages = true
    public let hasLatents = false
    public var count: Int { base.count }
    public var contextShape: [Int]? { Array(table.shape.dropFirst()) }

    /// `encoder` encodes the captions (on its device; the features are kept on the host). `save`: the encoder to
    /// write beside the run (nil when its weights came from a file).
    public init(base: FashionMNIST, encoder: CLIPTextEncoder, choice: CaptionChoice, save: CLIPTextModel?) {
        self.base = base
        self.choice = choice
        captions = FashionMNISTCaptions.allCaptions
        table = encoder.encode(captions + [""]).to(.cpu)
        emptyContext = table.select(axis: 0, index: captions.count)
        textEncoderToSave = save
    }

    public static var allCaptions: [String] {
        templates.flatMap { t in classNames.map { t.replacingOccurrences(of: "{}", with: $0) } }
    }

    /// The caption of `item` in `epoch` (nil when dropped to the empty caption).
    public func caption(item: Int, epoch: Int) -> String? {
        choice.dropped(item: item, epoch: epoch) ? nil : captions[row(item: item, epoch: epoch)]
    }

    func row(item: Int, epoch: Int) -> Int {
        if choice.dropped(item: item, epoch: epoch) { return captions.count }
        let t = choice.caption(item: item, epoch: epoch, count: FashionMNISTCaptions.templates.count)
        return t * base.numClasses + Int(base.labels[item])
    }

    public func batch(_ indices: [Int]) throws -> Batch { try batch(indices, epoch: 0) }

    public func batch(_ indices: [Int], epoch: Int) throws -> Batch {
        let b = try base.batch(indices)
        let rows = Tensor(indices.map { Int64(row(item: $0, epoch: epoch)) }, shape: [indices.count])
        return Batch(images: b.images, x0: b.x0, moments: false, labels: b.labels, context: table.indexSelect(axis: 0, indices: rows))
    }

    /// The first `n` distinct captions (template-major, so the first ten are one template over the ten classes).
    public func previewPrompts(_ n: Int) throws -> (texts: [String], context: Tensor) {
        let k = min(n, captions.count)
        return (Array(captions.prefix(k)), table.narrowed(0, start: 0, length: k))
    }
}
