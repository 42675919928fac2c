import Foundation

/// The plots of a run directory, `loss.png` and `fid.png`, as `LinePlot`s; `haste plot` (issue #17) can put
/// several runs' series on one of them. Both mark the alignment early-stop step (`early-stop-point`).
public enum RunPlots {
    /// What a run's plots say besides the numbers.
    public struct Context {
        public var runName: String
        /// The step where alignment stops; nil when the run has none (no teacher, or early-stop-point 0).
        public var earlyStop: Int?
        public init(runName: String, earlyStop: Int?) { (self.runName, self.earlyStop) = (runName, earlyStop) }

        public init(_ config: TrainConfig) {
            self.init(runName: config.expName, earlyStop: config.usesTeacher ? config.earlyStopPoint : nil)
        }

        var markers: [PlotMarker] { earlyStop.map { [PlotMarker(x: Double($0), label: "alignment stops: step \($0)")] } ?? [] }
    }

    public static let lossColor = RGB(31, 90, 180), fidColor = RGB(200, 40, 60)

    /// The denoising loss at every step (light) and its moving average (dark).
    public static func loss(_ points: [(Double, Double)], _ context: Context) -> LinePlot {
        let window = max(1, points.count / 50)
        var smooth: [(x: Double, y: Double)] = [], acc = 0.0
        for (i, p) in points.enumerated() {
            acc += p.1
            if i >= window { acc -= points[i - window].1 }
            smooth.append((p.0, acc / Double(min(i + 1, window))))
        }
        let raw = points.map { (x: $0.0, y: $0.1) }
        var series = [window > 1 ? PlotSeries(name: "loss at each step", points: raw, color: lossColor.lightened(0.65), lineWidth: 1)
                                 : PlotSeries(name: "loss at each step", points: raw, color: lossColor, lineWidth: 2, markers: points.count <= 20)]
        if window > 1 { series.append(PlotSeries(name: "moving average over \(window) steps", points: smooth, color: lossColor, lineWidth: 2)) }
        return LinePlot(title: "\(context.runName): training loss", xLabel: "training step",
                        yLabel: "denoising loss (velocity MSE)", series: series, markers: context.markers)
    }

    /// FID of the EMA model at each evaluation, every point marked with its value.
    public static func fid(_ points: [(Double, Double)], samples: Int, _ context: Context) -> LinePlot {
        let series = PlotSeries(name: "FID of \(samples) EMA samples", points: points.map { (x: $0.0, y: $0.1) }, color: fidColor,
                                lineWidth: 2, markers: true, valueLabels: true)
        return LinePlot(title: "\(context.runName): FID during training", xLabel: "training step",
                        yLabel: "FID (lower is better)", series: [series], markers: context.markers)
    }
}
