/// Kernels of the Embedding family (to be filled in: see the op list).
public protocol EmbeddingKernels: AnyObject {}
