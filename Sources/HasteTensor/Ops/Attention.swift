/// Kernels of the Attention family (to be filled in: see the op list).
public protocol AttentionKernels: AnyObject {}
