import HasteTensor

/// A stand-in device for plumbing tests: the CPU backend registered as `cuda:1`. Tensors there live in host
/// memory and run the CPU's kernels, so results equal `.cpu` bit for bit, while every op's device checks see a
/// device other than `.cpu`: a tensor left on the CPU by a model, the trainer or a command shows up as a
/// "x on cuda:1, y on cpu" failure. (The kernels themselves are tested on the emulated CUDA device.)
enum HostAsCUDA {
    static let device: Device = {
        Backends.register(CPUBackend.shared, for: .cuda(1))
        return .cuda(1)
    }()
}
