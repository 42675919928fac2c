/// Kernels of the Resize family (to be filled in: see the op list).
public protocol ResizeKernels: AnyObject {}
