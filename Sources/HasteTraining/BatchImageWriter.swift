import Foundation
import HasteIO
import HasteTensor

/// `haste generate`'s PNG writes on a background queue while the next batch samples: encoding (libpng, zlib level 6)
/// took 0.49 s for a batch of 64 images of 256² on one core (7.7 ms each), during which the GPU waited. A batch's
/// images are encoded in parallel; at most one batch is in flight (`submit` first waits for the one before), and a failed write
/// is thrown by the next `submit` or by `finish`, which the run calls before it packs or returns. Each PNG is
/// written atomically (`PNGImage.write`: a temporary, then a rename), so a run stopped at any point leaves whole
/// files only, and a rerun skips them.
final class BatchImageWriter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "haste.png-writer")
    private let group = DispatchGroup()
    private let lock = NSLock()
    private var failure: Error?

    /// Waits for the batch in flight (rethrowing its failure), then starts writing `pixels` (uint8 [n, H, W, 3] in
    /// `paths`' order) in the background.
    func submit(_ pixels: [UInt8], height: Int, width: Int, paths: [String]) throws {
        try finish()
        queue.async(group: group) { [self] in
            do { try Self.write(pixels, height: height, width: width, paths: paths) } catch {
                lock.lock(); failure = failure ?? error; lock.unlock()
            }
        }
    }

    /// Waits until every submitted image is on disk; throws the first failure.
    func finish() throws {
        group.wait()
        lock.lock(); let e = failure; failure = nil; lock.unlock()
        if let e { throw e }
    }

    /// The images of one batch, in parallel (each its own file) on at most `--threads` workers (`Parallel.threads`:
    /// the cores divided among the ranks on a node); the first failure, in path order, is thrown.
    static func write(_ pixels: [UInt8], height: Int, width: Int, paths: [String]) throws {
        let n = height * width * 3
        precondition(pixels.count == n * paths.count, "BatchImageWriter: \(pixels.count) bytes for \(paths.count) images of \(height)×\(width)")
        var errors = [Error?](repeating: nil, count: paths.count)
        let workers = max(1, min(paths.count, Parallel.threads))
        errors.withUnsafeMutableBufferPointer { e in
            let e = e
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                for k in stride(from: w, to: paths.count, by: workers) {
                    do { try PNGImage.write(Array(pixels[(k * n)..<((k + 1) * n)]), height: height, width: width, channels: 3, to: paths[k]) }
                    catch { e[k] = error }
                }
            }
        }
        if let first = errors.lazy.compactMap({ $0 }).first { throw first }
    }
}
