/// Kernels of the Conv family (to be filled in: see the op list).
public protocol ConvKernels: AnyObject {}
