import Foundation

/// GPU time of the work a closure queues on haste's stream: a pair of timing events recorded around it, the end
/// one waited for (`CUDADriver.timed`). For `LaunchTuner`, which times same-bits alternatives once per shape; the
/// profiler (`HASTE_CUDA_PROFILE=1`) keeps its own events per launch.
final class StreamTimer {
    typealias Event = OpaquePointer
    private let eventRecord: @convention(c) (Event?, OpaquePointer?) -> Int32
    private let eventSynchronize: @convention(c) (Event?) -> Int32
    private let elapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Event?, Event?) -> Int32
    private let start: Event, end: Event

    /// Throws where the driver `library` lacks an event symbol or cannot make the two events (the caller then
    /// cannot time: `timed` gives nil).
    init(library: CUDALibrarySearch.Loaded) throws {
        let k = CUDALibraryKind.driver
        let create: @convention(c) (UnsafeMutablePointer<Event?>, UInt32) -> Int32 = try library.symbol("cuEventCreate", k)
        eventRecord = try library.symbol("cuEventRecord", k)
        eventSynchronize = try library.symbol("cuEventSynchronize", k)
        elapsedTime = try library.symbol("cuEventElapsedTime", k)
        var a: Event?, b: Event?
        let ra = create(&a, 0), rb = create(&b, 0)          // flags 0: timing events
        guard ra == 0, rb == 0, let a, let b else { throw CUDAError("cuEventCreate failed (\(ra), \(rb))") }
        start = a; end = b
    }

    /// Milliseconds from the start event to the end one around `body`'s work on `stream`, after waiting for the
    /// end; nil where an event call fails (`body` has run all the same).
    func time(_ stream: OpaquePointer?, _ body: () -> Void) -> Double? {
        let began = eventRecord(start, stream) == 0
        body()
        guard began, eventRecord(end, stream) == 0, eventSynchronize(end) == 0 else { return nil }
        var ms: Float = 0
        return elapsedTime(&ms, start, end) == 0 ? Double(ms) : nil
    }
}
