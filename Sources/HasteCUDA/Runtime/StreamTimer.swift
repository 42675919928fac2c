import Foundation

/// The CUDA driver's event functions, resolved once from `libcuda.so.1` for the three users of events: the profiler
/// (`HASTE_CUDA_PROFILE=1`, a timing pair per launch), pinned staging (an event without timing behind each staged
/// copy) and `StreamTimer` (the tuner's clock). Throws where one is missing (the user then goes without events).
struct CUDAEvents {
    typealias Event = OpaquePointer
    static let disableTiming: UInt32 = 2                    // CU_EVENT_DISABLE_TIMING
    static let notReady: Int32 = 600                        // CUDA_ERROR_NOT_READY (cuEventQuery: not yet reached)
    let create: @convention(c) (UnsafeMutablePointer<Event?>, UInt32) -> Int32
    let record: @convention(c) (Event?, OpaquePointer?) -> Int32
    let query: @convention(c) (Event?) -> Int32
    let synchronize: @convention(c) (Event?) -> Int32
    let elapsed: @convention(c) (UnsafeMutablePointer<Float>, Event?, Event?) -> Int32

    init(library: CUDALibrarySearch.Loaded) throws {
        let k = CUDALibraryKind.driver
        create = try library.symbol("cuEventCreate", k); record = try library.symbol("cuEventRecord", k)
        query = try library.symbol("cuEventQuery", k); synchronize = try library.symbol("cuEventSynchronize", k)
        elapsed = try library.symbol("cuEventElapsedTime", k)
    }
}

/// GPU time of the work a closure queues on haste's stream: a pair of timing events recorded around it, the end
/// one waited for (`CUDADriver.timed`). For `LaunchTuner`, which times same-bits alternatives once per shape; the
/// profiler (`HASTE_CUDA_PROFILE=1`) keeps its own events per launch.
final class StreamTimer {
    private let events: CUDAEvents
    private let start: CUDAEvents.Event, end: CUDAEvents.Event

    /// Throws where the driver `library` lacks an event symbol or cannot make the two events (the caller then
    /// cannot time: `timed` gives nil).
    init(library: CUDALibrarySearch.Loaded) throws {
        events = try CUDAEvents(library: library)
        var a: CUDAEvents.Event?, b: CUDAEvents.Event?
        let ra = events.create(&a, 0), rb = events.create(&b, 0)     // flags 0: timing events
        guard ra == 0, rb == 0, let a, let b else { throw CUDAError("cuEventCreate failed (\(ra), \(rb))") }
        start = a; end = b
    }

    /// Milliseconds from the start event to the end one around `body`'s work on `stream`, after waiting for the
    /// end; nil where an event call fails (`body` has run all the same).
    func time(_ stream: OpaquePointer?, _ body: () -> Void) -> Double? {
        let began = events.record(start, stream) == 0
        body()
        guard began, events.record(end, stream) == 0, events.synchronize(end) == 0 else { return nil }
        var ms: Float = 0
        return events.elapsed(&ms, start, end) == 0 ? Double(ms) : nil
    }
}
