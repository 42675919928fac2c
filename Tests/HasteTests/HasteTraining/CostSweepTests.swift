import Foundation
import Testing
import HasteIO
import HasteModels
import HasteTensor
@testable import HasteTraining

/// How cost grows (issue #15 item 4): the FLOP count of a SiT step, the rule that skips sweep rows that would not
/// fit, the CPU's FMA peak on paper and measured, and the `haste plot --tsv` chart of the sweep. Pure functions
/// of their inputs (fake /proc/cpuinfo texts, fake peaks and MemAvailable); nothing here depends on timing.
@Suite struct CostSweepTests {
    /// A tiny config counted by hand, matmul by matmul.
    @Test func flopCountIsTheHandCountOfEveryMatmul() throws {
        var c = SiTConfig()
        (c.inputSize, c.patchSize, c.inChannels, c.hiddenSize, c.depth, c.numHeads, c.mlpRatio) = (4, 2, 3, 8, 2, 2, 2)
        (c.projectorDims, c.projectorHidden) = ([6], 10)
        // T = (4/2)² = 4 tokens, D = 8, MLP hidden M = 16, patch inputs P = 3·2·2 = 12.
        let patch = 4 * 12 * 8                                       // conv: one 12 → 8 product per token
        let timestep = 256 * 8 + 8 * 8                               // 256 → D → D, per sample
        let adaLN = 8 * 48, qkv = 4 * 8 * 24, logits = 4 * 4 * 8, weighted = 4 * 4 * 8, proj = 4 * 8 * 8, mlp = 4 * 8 * 16 * 2
        let block = adaLN + qkv + logits + weighted + proj + mlp
        let final = 8 * 16 + 4 * 8 * 12                               // adaLN D → 2D, linear D → P per token
        let projector = 4 * (8 * 10 + 10 * 10 + 10 * 6)               // D → 10 → 10 → 6 per token
        #expect(block == 2688 && patch + timestep + 2 * block + final == 8384)
        #expect(c.forwardMACs(batch: 1) == 8384 && c.forwardMACs(batch: 3) == 3 * 8384)
        #expect(c.forwardMACs(batch: 1, projections: true) == 8384 + projector)
        #expect(c.trainingFLOPs(batch: 3) == 3 * 2 * 3 * 8384)
        // SiT-XL/2 on 32×32 latents: the DiT paper's 118.6 "Gflops" (MACs) per image.
        let xl = try SiTConfig.named("SiT-XL/2")
        #expect((Double(xl.forwardMACs(batch: 1)) / 1e8).rounded() == 1186)
        // The sweep's tiny model is the demo's student, and its fixed memory is 16 bytes per parameter.
        var config = TrainConfig()
        CostSweep.apply(model: CostSweep.tinyModel, to: &config)
        let tiny = try config.studentConfig(sampleShape: [4, 32, 32], numClasses: 1000)
        #expect(tiny.hiddenSize == 128 && tiny.depth == 6 && tiny.numHeads == 4 && tiny.patchSize == 4 && tiny.encoderDepth == 4)
        let parameters = try SiT.stateDictShapes(tiny).reduce(0) { $0 + $1.1.reduce(1, *) }
        let fixed = try CostSweep.fixedMiB(tiny)
        #expect(fixed == Double(parameters * 16) / 1_048_576)
    }

    @Test func skipRulePredictsFixedPlusPerImageAndSkipsAbove80PercentOfMemAvailable() {
        typealias P = CostSweep.Point
        // Nothing measured yet: the weights and optimizer state alone.
        let none = CostSweep.peakModel(measured: [], fixedMiB: 500)
        #expect(none == CostSweep.PeakModel(fixedMiB: 500, perImageMiB: 0))
        #expect(CostSweep.skipReason(batch: 1, model: none, memAvailableMiB: 600) != nil)      // 500 > 480
        #expect(CostSweep.skipReason(batch: 1, model: none, memAvailableMiB: 700) == nil)      // 500 ≤ 560
        // One batch measured: what its peak holds beyond the fixed part is per image.
        let one = CostSweep.peakModel(measured: [P(batch: 1, peakMiB: 700)], fixedMiB: 500)
        #expect(one == CostSweep.PeakModel(fixedMiB: 500, perImageMiB: 200) && one.at(batch: 4) == 1300)
        let low = CostSweep.peakModel(measured: [P(batch: 2, peakMiB: 300)], fixedMiB: 500)
        #expect(low == CostSweep.PeakModel(fixedMiB: 300, perImageMiB: 0))
        // Two or more: the line through the two largest batches, whatever their order.
        let two = CostSweep.peakModel(measured: [P(batch: 4, peakMiB: 1600), P(batch: 1, peakMiB: 1000)], fixedMiB: 500)
        #expect(two == CostSweep.PeakModel(fixedMiB: 800, perImageMiB: 200) && two.at(batch: 16) == 4000)
        #expect(CostSweep.skipReason(batch: 16, model: two, memAvailableMiB: 5000) == nil)    // exactly 80%: fits
        #expect(CostSweep.skipReason(batch: 16, model: two, memAvailableMiB: 4999)
                == "predicted peak 4000 MiB (800 fixed + 200.0 per image) > 80% of MemAvailable 4999 MiB")
        let three = CostSweep.peakModel(measured: [P(batch: 1, peakMiB: 1000), P(batch: 4, peakMiB: 1600), P(batch: 16, peakMiB: 2800)],
                                        fixedMiB: 0)
        #expect(three == CostSweep.PeakModel(fixedMiB: 1200, perImageMiB: 100))
        // A peak that shrank (noise) does not make the per-image part negative.
        let flat = CostSweep.peakModel(measured: [P(batch: 1, peakMiB: 1000), P(batch: 4, peakMiB: 990)], fixedMiB: 0)
        #expect(flat.perImageMiB == 0 && flat.at(batch: 64) == 990)
        #expect(CostSweep.memAvailableMiB(meminfo: "MemTotal:       32000000 kB\nMemFree: 100 kB\nMemAvailable:   2048000 kB\n") == 2000)
        #expect(CostSweep.memAvailableMiB(meminfo: "MemTotal: 1 kB\n") == nil)
    }

    /// /proc/cpuinfo of `ids` (physical id, core id) processors.
    static func cpuinfo(_ ids: [(Int, Int)], vendor: String, family: Int, flags: String) -> String {
        ids.enumerated().map { i, id in
            "processor\t: \(i)\nvendor_id\t: \(vendor)\ncpu family\t: \(family)\nmodel name\t: Test CPU 9000\ncpu MHz\t\t: 2000.000\n"
                + "physical id\t: \(id.0)\ncore id\t\t: \(id.1)\nflags\t\t: fpu sse sse2 \(flags)\n"
        }.joined(separator: "\n")
    }

    @Test func paperPeakIsCoresTimesClockTimesLanesTimesFMAUnitsTimesTwo() throws {
        // 4 logical processors = 2 cores × 2 SMT siblings, AVX2 + FMA, sysfs max 3.5 GHz: 2 × 3.5 × 8 × 2 × 2.
        let intel = CPUInfo(cpuinfo: Self.cpuinfo([(0, 0), (0, 1), (0, 0), (0, 1)], vendor: "GenuineIntel", family: 6, flags: "avx avx2 fma"))
        #expect(intel.model == "Test CPU 9000" && intel.physicalCores == 2 && intel.processors.count == 4)
        #expect(intel.simdFlags.map(\.name) == ["avx2", "fma", "avx512f"] && intel.simdFlags.map(\.present) == [true, true, false])
        let t = try #require(CPUPeak.theoretical(intel, maxFrequencyKHz: "3500000\n"))
        #expect(t.cores.value == 2 && t.clockGHz.value == 3.5 && t.lanes.value == 8 && t.fmaUnits.value == 2 && t.gflops == 224)
        #expect(t.clockGHz.source.contains("cpuinfo_max_freq") && t.cores.source.contains("core id") && t.fmaUnits.source.hasPrefix("assumed"))
        // No cpufreq (a VM): the current clock, said so. AVX-512 is 16 lanes on Zen 5 (family 26), 8 on Zen 4 (25).
        let zen5 = CPUInfo(cpuinfo: Self.cpuinfo([(0, 0), (0, 1)], vendor: "AuthenticAMD", family: 26, flags: "avx2 fma avx512f"))
        let z5 = try #require(CPUPeak.theoretical(zen5, maxFrequencyKHz: nil))
        #expect(z5.clockGHz.value == 2 && z5.clockGHz.source.contains("cpu MHz") && z5.lanes.value == 16 && z5.gflops == 256)
        let zen4 = CPUInfo(cpuinfo: Self.cpuinfo([(0, 0)], vendor: "AuthenticAMD", family: 25, flags: "avx2 fma avx512f"))
        let z4 = try #require(CPUPeak.theoretical(zen4, maxFrequencyKHz: nil))
        #expect(z4.lanes.value == 8 && z4.lanes.source.contains("Zen 4") && z4.gflops == 64)
        // No core ids, no FMA, SSE only: every processor counted, 4 lanes, 1 unit; an empty sysfs file is ignored.
        let old = CPUInfo(cpuinfo: "processor\t: 0\ncpu MHz\t: 1000\nflags\t: sse sse2\n\nprocessor\t: 1\ncpu MHz\t: 1000\nflags\t: sse sse2\n")
        let o = try #require(CPUPeak.theoretical(old, maxFrequencyKHz: ""))
        #expect(old.physicalCores == nil && o.cores.value == 2 && o.lanes.value == 4 && o.fmaUnits.value == 1 && o.gflops == 16)
        #expect(CPUPeak.theoretical(CPUInfo(cpuinfo: ""), maxFrequencyKHz: nil) == nil)
    }

    @Test func measuredPeakIsTheBestRateOfRepeatedSgemms() {
        let m = CPUPeak.measure(threads: 1, seconds: 0.01, maxSize: 256)
        #expect(m.size == 256 && m.threads == 1 && m.calls >= 2 && m.seconds > 0 && m.gflops > 0 && m.gflops.isFinite)
    }

    static let sweepTSV = """
        side\tmodel\tseries\tbatch\timg_per_s\tskipped
        haste\tSiT-S/2\thaste SiT-S/2\t1\t10\t
        haste\tSiT-S/2\thaste SiT-S/2\t4\t30\t
        torch\tSiT-S/2\ttorch SiT-S/2\t4\t20\t
        torch\tSiT-S/2\ttorch SiT-S/2\t1\t8\t
        haste\tSiT-S/2\thaste SiT-S/2\t16\t-\tpredicted peak too large

        """

    /// One line per series on a base-2 log axis, every point's disc visible (the legend avoids them).
    @Test func tsvPlotDrawsOneLinePerSeriesOnALogAxis() throws {
        let plot = try TablePlot.plot(text: Self.sweepTSV, path: "sweep.tsv", x: "batch", y: "img_per_s", series: "series", logX: true)
        #expect(plot.legendLines == ["haste SiT-S/2", "torch SiT-S/2", "1 row without a number in 'img_per_s' not drawn"])
        #expect(plot.series.map { $0.points.map(\.x) } == [[1, 4], [1, 4]] && plot.series[1].points.map(\.y) == [8, 20])
        #expect(plot.xLabel == "batch (log scale)" && plot.series[0].color != plot.series[1].color)
        let l = plot.layout
        #expect(l.xTicks.map { $0.label } == ["1", "2", "4"] && abs((l.px(4) - l.px(2)) - (l.px(2) - l.px(1))) <= 1)
        #expect(plot.legendCover(plot.legendPlacement).points == 0)
        let c = plot.render()
        for s in plot.series {
            for p in s.points {
                #expect(count(c, s.color, x: (l.px(p.x) - 4)..<(l.px(p.x) + 5), y: (l.py(p.y) - 4)..<(l.py(p.y) + 5)) > 20, "\(s.name) \(p)")
            }
        }
        // Between batch 1 and 4 each line passes its interpolated value at batch 2 (half way on the log axis).
        let mid = l.px(2)
        #expect(count(c, plot.series[0].color, x: (mid - 1)..<(mid + 2), y: (l.py(20) - 3)..<(l.py(20) + 4)) > 0)
        #expect(count(c, plot.series[1].color, x: (mid - 1)..<(mid + 2), y: (l.py(14) - 3)..<(l.py(14) + 4)) > 0)
        // --log-y: a base-10 y axis (8 to 30 is too narrow for 1-2-5 ticks: 1 to 9 per decade), its label says so.
        let logY = try TablePlot.plot(text: Self.sweepTSV, path: "t", x: "batch", y: "img_per_s", series: "series", logX: true, logY: true)
        let ly = logY.layout
        #expect(logY.logY && logY.yLabel == "img_per_s (log scale)" && ly.yTicks.map(\.label) == ["8", "9", "10", "20", "30"])
        #expect(abs((ly.py(10) - ly.py(20)) - (ly.py(15) - ly.py(30))) <= 1 && logY.legendCover(logY.legendPlacement).points == 0)
        // Without --series: one line named after the y column.
        #expect(try TablePlot.plot(text: Self.sweepTSV, path: "t", x: "batch", y: "img_per_s", series: nil).series.map(\.name) == ["img_per_s"])
    }

    @Test func tsvPlotRefusesTablesItCannotDraw() throws {
        func message(_ text: String, x: String = "batch", y: String = "img_per_s", logX: Bool = false, logY: Bool = false) -> String {
            do { _ = try TablePlot.plot(text: text, path: "t.tsv", x: x, y: y, series: nil, logX: logX, logY: logY); return "accepted" } catch {
                return "\(error)"
            }
        }
        #expect(message(Self.sweepTSV, y: "ips").contains("t.tsv: has no column 'ips' (--y); its columns are: side, model, series, batch, img_per_s, skipped"))
        #expect(message("").contains("is empty"))
        #expect(message("batch\timg_per_s\n1\t2\t3\n").contains("line 2 has 3 cells but the header has 2"))
        #expect(message("batch\timg_per_s\nbig\t2\n").contains("line 2: 'big' in column 'batch' (--x) is not a number"))
        #expect(message("batch\timg_per_s\n0\t2\n", logX: true).contains("cannot go on a log axis"))
        #expect(message("batch\timg_per_s\n1\t-\n").contains("no row has a number in column 'img_per_s'"))
        #expect(message("batch\timg_per_s\n1\t2\n4\t0\n", logY: true)
            .contains("t.tsv: line 3: 0 in column 'img_per_s' cannot go on a log axis (--log-y): y must be > 0"))
        #expect(message("batch\timg_per_s\n1\t-0.5\n", logY: true).contains("line 2: -0.5 in column 'img_per_s' cannot go on a log axis (--log-y)"))
        #expect(message("batch\timg_per_s\n1\t0\n") == "accepted" && message("batch\timg_per_s\n1\t2\n4\t-\n", logY: true) == "accepted")
        #expect(throws: HasteError.self) { try TablePlot.plot(tsv: "/nonexistent/sweep.tsv", x: "batch", y: "img_per_s", series: nil) }
    }
}
