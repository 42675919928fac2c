import HasteTensor

/// Caption-conditioned training data in the reference MS-COCO feature layout (spec/data.md §2): for each image, in
/// ascending COCO image-id order, its 256 px crop, its VAE moments and the CLIP text features of each of its captions,
/// plus the features of the empty caption for classifier-free guidance. Two forms hold the same items: the reference
/// folder (`{i}.png`, `{i}.npy`, `{i}_{k}.npy`, `empty_context.npy`) and haste's packed HDF5 file; training reads
/// either through this protocol.
public protocol CaptionFeatureSource: AnyObject {
    /// Where the items come from (a folder or a file), for messages.
    var path: String { get }
    /// Number of images.
    var count: Int { get }
    /// Number of captions of image `i` (at least 1; COCO has 5 to 7).
    func captionCount(_ i: Int) -> Int
    /// The stored crop, uint8 [3, R, R], for the teacher.
    func image(_ i: Int) throws -> Tensor
    /// VAE posterior moments, float32 [8, r, r]: mean (4 channels) then log-variance (4 channels), not clamped.
    func moments(_ i: Int) throws -> Tensor
    /// Text features of caption `k` of image `i`, float32 `contextShape` ([77, 768] for CLIP ViT-L/14).
    func caption(_ i: Int, _ k: Int) throws -> Tensor
    /// Features of the empty caption "", float32 `contextShape`.
    var emptyContext: Tensor { get }
    /// [tokens, width] of every caption feature.
    var contextShape: [Int] { get }
}
