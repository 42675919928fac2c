import HasteTensor
@testable import HasteCUDA

/// The tests' CUDA device: `CUDABackend` over one `EmulatedDriver`, registered as `.cuda(0)` on first use.
///
/// Kernel tests create tensors on `EmulatedCUDA.device` and compare with the CPU backend:
/// `let y = x.to(EmulatedCUDA.device).gelu().to(.cpu)`. Each family is compiled by clang++ once per process
/// (and cached on disk), every launch runs at once on the calling thread (launches of all tests are serialised).
/// What the emulator finds (a pointer argument outside device memory, a wrong argument kind, an access past the
/// end of an allocation, a barrier or shuffle not reached by every thread, a compile error) is recorded as an issue
/// of the running test, naming the kernel; the launch is skipped or abandoned and the test goes on.
/// Not caught: an access past a tensor's end but inside its caching-allocator block (sizes round up to 512 bytes /
/// 2 MiB), races between threads of a block (they run one at a time), reads of a freed tensor whose block is
/// cached. A kernel that sets the error word makes the backend's next `synchronize()` (every `to(.cpu)`) end
/// the process as on a GPU: test bad-input paths with an exit test (`#expect(processExitsWith: .failure)`).
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
