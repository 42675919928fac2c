import HasteTensor
@testable import HasteCUDA

/// The tests' CUDA device: `CUDABackend` over one `EmulatedDriver`, registered as `.cuda(0)` on first use.
///
/// Kernel tests create tensors on `EmulatedCUDA.device` and compare with the CPU backend:
/// `let y = x.to(EmulatedCUDA.device).gelu().to(.cpu)`. Each family is compiled by clang++ once per process
/// (and cached on disk), every launch runs at once on the calling thread (launches of all tests are serialised).
/// What the emulator finds (a pointer argument outside device memory, a wrong argument kind, an access past the
/// end of an allocation, a barrier or shuffle not reached by every thread, undefined behaviour such as an index
/// outside a local array or a float → int conversion out of range, a compile error) is recorded as an issue of the
/// running test, naming the kernel, block, thread and source line; the launch is skipped or abandoned and the
/// test goes on. Even blocks start their threads in reverse order and shared memory is poisoned (NaN) at every
/// block start, so a missing `__syncthreads()` between a write and other threads' reads shows up as NaN; a byte
/// written by two blocks without an atomic (a plain `+=` from many blocks) is reported as a race, and so are two
/// threads' accesses to one byte of shared memory or of a pointer argument's allocation that no barrier orders (a
/// plain `+=` from many threads of a block; an atomic against another thread's plain access, not against another
/// atomic), a block's read of what an earlier block of the launch changed and its change of what an earlier block
/// read, by an atomic or not, and a hand-over read (`haste_ldcg`) of writes their block released by an atomic before
/// a `haste_threadfence()` (`EmulatedDriver.checksSharedRaces`).
/// Not caught: an access past a tensor's end but inside its
/// caching-allocator block (sizes round up to 512 bytes / 2 MiB), races through memory no pointer argument lies
/// in, races between blocks in launches too big for the check (EmulatedDriver.raceCheckBudget), reads of a
/// freed tensor whose block is cached, FMA contraction
/// (NVRTC fuses a·b + c, the host compiler does not: bitwise agreement here may be a rounding apart on a GPU).
/// HASTE_EMULATOR_FLAGS="-O0 -g" builds kernels for a debugger. A kernel that sets the error word makes the
/// backend's next `synchronize()` (every `to(.cpu)`) end the process as on a GPU: test bad-input paths with an exit
/// test (`#expect(processExitsWith: .failure)`).
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
