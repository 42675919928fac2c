/// Kernels of the Loss family (to be filled in: see the op list).
public protocol LossKernels: AnyObject {}
