import HasteTensor
@testable import HasteCUDA

/// A host-only CUDA device (`HostOnlyDriver`: nothing computed, launches counted) registered at `.cuda(index)`, for a
/// suite's launch-count tests: give each suite its own index, so that exact counts do not race other suites' runs.
func hostOnlyDevice(_ index: Int) -> (device: Device, driver: HostOnlyDriver) {
    let driver = HostOnlyDriver()
    Backends.register(CUDABackend(driver: driver, device: .cuda(index)), for: .cuda(index))
    return (.cuda(index), driver)
}
