import HasteTensor

/// One training batch. `images` feed the teacher (uint8 [B, 3, R, R]); `x0` is the clean sample the
/// student denoises: pixels in [-1, 1] for pixel-space data, or posterior moments for latent data (the
/// trainer draws a fresh latent from them each step: spec/data.md §1.6). Moments are mean | std on the channels.
/// `context`: caption features [B, L, D] of text-conditioned data (CFG drop already applied), else nil.
public struct Batch {
    public let images: Tensor?
    public let x0: Tensor
    public let moments: Bool
    public let labels: Tensor
    public let context: Tensor?
    /// The labels as read from the data, on the host: `labels` itself on the CPU; kept by `to(_:)`, so the
    /// objective reads the class labels without waiting for the device (a read from a GPU drains its queue).
    public let hostLabels: Tensor

    public init(images: Tensor?, x0: Tensor, moments: Bool, labels: Tensor, context: Tensor? = nil, hostLabels: Tensor? = nil) {
        (self.images, self.x0, self.moments, self.labels, self.context) = (images, x0, moments, labels, context)
        self.hostLabels = hostLabels ?? labels
    }

    /// The batch on `device` (itself on the CPU): data is read on the host and moved once per micro-batch.
    public func to(_ device: Device) -> Batch {
        device == x0.device ? self : Batch(images: images?.to(device), x0: x0.to(device), moments: moments, labels: labels.to(device),
                                           context: context?.to(device), hostLabels: hostLabels)
    }
}

/// A labelled training set, indexable so that batches are a pure function of the item order.
public protocol TrainingDataset {
    var count: Int { get }
    var numClasses: Int { get }
    /// Side of the student's input (latent side, or pixel side) and its channels.
    var sampleShape: [Int] { get }
    /// Whether the set carries raw images for a teacher.
    var hasImages: Bool { get }
    /// Whether samples are VAE latents (moments) rather than pixels.
    var hasLatents: Bool { get }
    func batch(_ indices: [Int]) throws -> Batch
    /// The items at `indices` as epoch `epoch` sees them (caption data picks a caption per image per epoch).
    func batch(_ indices: [Int], epoch: Int) throws -> Batch
    /// [tokens, width] of the caption features of text-conditioned data; nil for class labels.
    var contextShape: [Int]? { get }
}

extension TrainingDataset {
    public func batch(_ indices: [Int], epoch: Int) throws -> Batch { try batch(indices) }
    public var contextShape: [Int]? { nil }
}

/// Epoch-wise shuffling with drop_last, a pure function of (seed, epoch): resuming needs only the position.
public struct EpochOrder {
    public let count: Int, batchSize: Int, seed: UInt64
    public var batchesPerEpoch: Int { count / batchSize }

    public init(count: Int, batchSize: Int, seed: UInt64) { (self.count, self.batchSize, self.seed) = (count, batchSize, seed) }

    public func indices(epoch: Int, batch: Int) -> [Int] {
        let perm = RandomGenerator(seed: seed &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(epoch + 1)).permutation(count)
        return Array(perm[(batch * batchSize)..<((batch + 1) * batchSize)])
    }
}

extension HasteError {
    /// A preprocessed dataset without labels (`{"labels": null}`, or label −1 in dataset.h5): the source tree had
    /// fewer than two class folders (spec/data.md §1.1 step 2). SiT training is class-conditional.
    static func unlabelled(path: String) -> HasteError {
        .fileFormat(path: path, detail: "the dataset has no class labels (its source had fewer than 2 class folders); "
                    + "class-conditional training needs them: put the images in one folder per class and rerun `haste preprocess`")
    }
}
