/// Kernels of the Norm family (to be filled in: see the op list).
public protocol NormKernels: AnyObject {}
