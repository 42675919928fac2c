/// Kernels of the Softmax family (to be filled in: see the op list).
public protocol SoftmaxKernels: AnyObject {}
