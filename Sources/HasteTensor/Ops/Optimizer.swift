/// Kernels of the Optimizer family (to be filled in: see the op list).
public protocol OptimizerKernels: AnyObject {}
