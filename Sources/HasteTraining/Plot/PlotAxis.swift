import Foundation

/// One axis of a plot: the value range shown and its tick values at a 1-2-5 step.
public struct PlotAxis: Equatable {
    public let lower: Double, upper: Double
    public let ticks: [Double]
    public let step: Double

    /// A range holding every value of `values` with `padding` (a fraction of the span) on both sides;
    /// a single value (or none) gets a span of its own.
    /// `minimumStep` 1 keeps ticks on whole numbers (training steps).
    public init(covering values: [Double], padding: Double, targetTicks: Int = 6, minimumStep: Double = 0) {
        var lo = values.min() ?? 0, hi = values.max() ?? 1
        if hi - lo < 1e-12 * max(1, abs(hi)) {
            let half = max(abs(hi) * 0.1, 1)
            (lo, hi) = (lo - half, hi + half)
        } else {
            let pad = (hi - lo) * padding
            (lo, hi) = (lo - pad, hi + pad)
        }
        let s = max(PlotAxis.stepNearest(ticks: targetTicks, span: hi - lo), minimumStep)
        let first = (lo / s).rounded(.up), last = (hi / s).rounded(.down)
        ticks = first <= last ? stride(from: first, through: last, by: 1).map { $0 * s } : []
        step = s
        (lower, upper) = (lo, hi)
    }

    /// The 1-2-5 step whose tick count over `span` is nearest `ticks` (ties: the larger step).
    static func stepNearest(ticks: Int, span: Double) -> Double {
        let base = niceStep(span / Double(ticks))
        let candidates = [base / 5, base / 2, base / 2.5, base, base * 2, base * 2.5, base * 5].map { niceStep($0) }
        return candidates.min { a, b in
            let (da, db) = (abs(span / a - Double(ticks)), abs(span / b - Double(ticks)))
            return da == db ? a > b : da < db
        }!
    }

    /// The smallest of 1, 2, 5 × 10^k at least `raw`.
    public static func niceStep(_ raw: Double) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        return [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw * (1 - 1e-9) } ?? 10 * magnitude
    }

    /// The ticks of a base-10 log axis spanning the log10 values `lower`…`upper`, as data values with labels
    /// (`%g`: 0.1, 0.2, 0.5, 1, 2, 5, 10): 1-2-5 per decade; only each decade's 1 where that gives more than
    /// `most`; 1 to 9 per decade where 1-2-5 gives fewer than 3; in a range too narrow for 2 of those, the ticks of
    /// a linear axis over it.
    public static func logTicks(lower: Double, upper: Double, most: Int = 12) -> [(value: Double, label: String)] {
        guard lower.isFinite, upper.isFinite, lower < upper else { return [] }
        func ticks(_ mantissas: [Double]) -> [Double] {
            var out: [Double] = []
            for e in Int(lower.rounded(.down))...Int(upper.rounded(.up)) {
                let decade: Double = pow(10, Double(abs(e)))
                for m in mantissas {
                    let v = e >= 0 ? m * decade : m / decade                  // 2 / 10 is the double nearest 0.2
                    if log10(v) >= lower - 1e-12 && log10(v) <= upper + 1e-12 { out.append(v) }
                }
            }
            return out
        }
        let oneTwoFive = ticks([1, 2, 5]), oneToNine = ticks((1...9).map(Double.init))
        let chosen = oneTwoFive.count > most ? ticks([1]) : oneTwoFive.count >= 3 ? oneTwoFive : oneToNine
        if chosen.count >= 2 { return chosen.map { (value: $0, label: String(format: "%g", $0)) } }
        let linear = PlotAxis(covering: [pow(10, lower), pow(10, upper)], padding: 0, targetTicks: 4)
        return linear.ticks.map { (value: $0, label: linear.label($0)) }
    }

    /// Tick labels with as many decimals as the step needs; large values (≥ 10 000, as step counts) in thousands: `250k`.
    public func label(_ value: Double) -> String {
        let inThousands = max(abs(lower), abs(upper)) >= 10_000 && step >= 1000
        let (v, s) = inThousands ? (value / 1000, step / 1000) : (value, step)
        let decimals = max(0, Int((-log10(s)).rounded(.up)))
        let text = String(format: "%.\(decimals)f", abs(v) < s * 1e-6 ? 0 : v)
        return inThousands && text != "0" ? text + "k" : text
    }
}

/// A value printed beside a point (FID values on their markers): 1 decimal from 1 up, 3 significant digits below.
public func plotValueLabel(_ v: Double) -> String {
    abs(v) >= 1 ? String(format: "%.1f", v) : String(format: "%.3g", v)
}
