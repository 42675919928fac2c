/// Kernels of the Movement family (to be filled in: see the op list).
public protocol MovementKernels: AnyObject {}
