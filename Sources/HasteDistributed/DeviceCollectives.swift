import HasteTensor

/// Gradient sums where the gradients live: NCCL on CUDA ranks (HasteCUDA's `NCCLCollectives`), so a GPU rank
/// never copies its gradients through host memory for MPI. One communicator per job over the same ranks as the
/// host `Communicator`; every rank queues the same sums in the same order (GradientReducer's fixed bucket order).
public protocol DeviceCollectives: AnyObject {
    /// For the log: "NCCL 2.21.5 (/…/libnccl.so.2), 8 ranks".
    var summary: String { get }
    /// Queues an in-place sum across ranks of the `count` float32s at the start of `buffer` (device memory),
    /// after the work already queued on the device's stream and before any queued later; returns at once.
    /// A failure is kept for `wait()`.
    func queueSum(_ buffer: Buffer, count: Int)
    /// Waits until every queued sum is done; throws the first failure (the library's words and what to do),
    /// after aborting the communicator so no rank is left waiting on this one.
    func wait() throws
    /// Ends the communicator: cleanly (waits for queued sums) at the end of a job, or `abort` after a failure
    /// (cancels them). Later calls do nothing.
    func close(abort: Bool)
}
