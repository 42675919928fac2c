import HasteTensor
@testable import HasteCUDA

/// The tests' CUDA device: `CUDABackend` over one `EmulatedDriver`, registered as `.cuda(0)` on first use.
/// Kernel tests create tensors on `EmulatedCUDA.device` and compare with the CPU backend; the emulator's findings
/// (bad pointers, deadlocks, launch errors) are recorded as issues of the running test.
enum EmulatedCUDA {
    static let backend: CUDABackend = {
        let backend = CUDABackend(driver: EmulatedDriver(), device: .cuda(0))
        Backends.register(backend, for: .cuda(0))
        return backend
    }()

    /// `.cuda(0)`, opened.
    static let device: Device = {
        _ = backend
        return .cuda(0)
    }()

    /// The emulator under `backend`.
    static var driver: EmulatedDriver { backend.driver as! EmulatedDriver }
}
