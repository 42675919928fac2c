import Foundation

/// The one progress display of the CLI (generate, fid, preprocess, npz): on stderr, redrawn in place at most
/// every 0.2 s on a terminal, a plain line every 10 s otherwise (logs stay readable), always at completion:
/// `label [#########.....] done/total  12.3 img/s  ETA 0:01:23`. Thread-safe: workers may `advance` it.
public final class ProgressBar: @unchecked Sendable {
    private let lock = NSLock()
    private let enabled: Bool, isTerminal: Bool
    private var label: String, total: Int, done = 0
    private var start = Date(), last = Date.distantPast
    private var drawnAt = -1, lineOpen = false

    public init(label: String, total: Int = 0, enabled: Bool = true) {
        (self.label, self.total, self.enabled) = (label, total, enabled)
        isTerminal = isatty(STDERR_FILENO) != 0
    }

    /// Adds n finished items.
    public func advance(_ n: Int = 1) {
        lock.lock(); defer { lock.unlock() }
        done += n
        drawIfDue()
    }

    /// Sets absolute counts; a new label ends the current line and restarts the rate clock (FID's two sides).
    public func update(done: Int, total: Int, label: String? = nil) {
        lock.lock(); defer { lock.unlock() }
        if let label, label != self.label {
            endLine()
            (self.label, start, last, drawnAt) = (label, Date(), .distantPast, -1)
        }
        (self.done, self.total) = (done, total)
        drawIfDue()
    }

    /// Draws the final state (if not drawn yet) and ends the line.
    public func finish() {
        lock.lock(); defer { lock.unlock() }
        if enabled && total > 0 && drawnAt != done { draw() }
        endLine()
    }

    /// h:mm:ss.
    public static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
    }

    private func drawIfDue() {
        guard enabled, total > 0 else { return }
        guard done >= total || Date().timeIntervalSince(last) > (isTerminal ? 0.2 : 10) else { return }
        draw()
    }

    private func draw() {
        let now = Date(), width = 30
        last = now
        drawnAt = done
        let filled = Swift.min(width, width * done / Swift.max(total, 1))
        let rate = Double(done) / Swift.max(now.timeIntervalSince(start), 1e-9)
        let eta = rate > 0 ? ProgressBar.clock(Double(Swift.max(total - done, 0)) / rate) : "--:--:--"
        let line = "\(label) [\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] "
            + "\(done)/\(total)  " + String(format: "%.1f", rate) + " img/s  ETA \(eta)"
        FileHandle.standardError.write(Data((isTerminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
        lineOpen = isTerminal
    }

    private func endLine() {
        if lineOpen { FileHandle.standardError.write(Data("\n".utf8)) }
        lineOpen = false
    }
}
