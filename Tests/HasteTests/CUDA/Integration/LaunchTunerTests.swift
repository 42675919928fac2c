import Testing
@testable import HasteTensor
@testable import HasteCUDA
import HasteTraining

/// `LaunchTuner`: same-bits alternatives timed at their first use per key, the fastest kept; and the flash dk/dv
/// kernel's ways of summing dq and entry points tuned on the emulator with made-up kernel costs.
@Suite struct LaunchTunerTests {
    /// A timer giving each candidate's run a fixed time (by the index `body` last ran), counting the runs.
    final class FakeTimer {
        let times: [Double?]
        var ran: [Int] = []
        init(_ times: [Double?]) { self.times = times }
        func body(_ i: Int) { ran.append(i) }
        func timed(_ work: () -> Void) -> Double? {
            work()
            return times[ran.last!]
        }
    }

    static func candidates(_ n: Int, extra: [Int] = []) -> [LaunchTuner.Candidate] {
        (0..<n).map { LaunchTuner.Candidate("c\($0)", extraBytes: $0 < extra.count ? extra[$0] : 0) }
    }

    @Test func theFastestCandidateIsChosenOnceAndKept() {
        LaunchTuner.$allowed.withValue(true) {
            let tuner = LaunchTuner(), t = FakeTimer([3, 1, 2])
            tuner.run("k", Self.candidates(3), count: 3, repeatable: true, freeBytes: 1 << 30, timed: t.timed, t.body)
            // each candidate: one run not counted, two timed; then the chosen once more (the outputs are its)
            #expect(t.ran == [0, 0, 0, 1, 1, 1, 2, 2, 2, 1])
            #expect(tuner.decisions == [LaunchTuner.Decision(key: "k", names: ["c0", "c1", "c2"], ms: [3, 1, 2], chosen: 1)])
            #expect(tuner.decisions.first?.description == "tuned k: c0 3.000 ms, c1 1.000 ms, c2 2.000 ms → c1")
            t.ran = []
            tuner.run("k", Self.candidates(3), count: 3, repeatable: true, freeBytes: 1 << 30, timed: t.timed, t.body)
            #expect(t.ran == [1])
            // Another key, or the same key with other candidates (a switch removed one), is tuned afresh.
            t.ran = []
            tuner.run("k", Self.candidates(2), count: 2, repeatable: true, freeBytes: 1 << 30, timed: t.timed, t.body)
            #expect(t.ran == [0, 0, 0, 1, 1, 1, 1] && tuner.decisions.count == 2)
        }
    }

    @Test func tiesKeepTheFirstAndUntimedRunsTheFirstUnremembered() {
        LaunchTuner.$allowed.withValue(true) {
            let tuner = LaunchTuner(), tie = FakeTimer([2, 2, 5])
            tuner.run("tie", Self.candidates(3), count: 3, repeatable: true, freeBytes: 1 << 30, timed: tie.timed, tie.body)
            #expect(tuner.decisions.first?.chosen == 0 && tie.ran.last == 0)
            // One candidate, tuning off, or an in-place call (an output in an input's storage: it cannot be run again):
            // the first, once, untimed, though this clock times and prefers the second.
            let one = FakeTimer([3, 1])
            tuner.run("one", Self.candidates(1), count: 1, repeatable: true, freeBytes: 1 << 30, timed: one.timed, one.body)
            LaunchTuner.$allowed.withValue(false) {
                tuner.run("off", Self.candidates(2), count: 2, repeatable: true, freeBytes: 1 << 30, timed: one.timed, one.body)
            }
            tuner.run("in place", Self.candidates(2), count: 2, repeatable: false, freeBytes: 1 << 30, timed: one.timed, one.body)
            #expect(one.ran == [0, 0, 0] && tuner.decisions.count == 1)
            // No timing (the emulator, the host-only device): the first candidate, once, nothing remembered, and no
            // timing tried again on that tuner, even where the clock would now give one.
            let none = FakeTimer([nil, 1])
            tuner.run("none", Self.candidates(2), count: 2, repeatable: true, freeBytes: 1 << 30, timed: none.timed, none.body)
            let later = FakeTimer([3, 1])
            tuner.run("later", Self.candidates(2), count: 2, repeatable: true, freeBytes: 1 << 30, timed: later.timed, later.body)
            #expect(none.ran == [0] && later.ran == [0] && tuner.decisions.count == 1)
        }
        let a = Tensor.zeros([4]), b = Tensor.zeros([4])
        let view = Buffer(storage: a.storage, offset: 2, dtype: .float32)
        #expect(CUDABackend.separate(outputs: [b.buffer, nil], inputs: [a.buffer, nil]))
        #expect(!CUDABackend.separate(outputs: [b.buffer, view], inputs: [a.buffer]) && !CUDABackend.separate(outputs: [a.buffer], inputs: [nil, view]))
    }

    /// A candidate whose temporary bytes exceed a quarter of the free memory is not tried, however fast.
    @Test func candidatesTooLargeForTheFreeMemoryAreNotTried() {
        LaunchTuner.$allowed.withValue(true) {
            let tuner = LaunchTuner(), t = FakeTimer([3, 1, 2])
            tuner.run("m", Self.candidates(3, extra: [0, 300, 200]), count: 3, repeatable: true, freeBytes: 1000, timed: t.timed, t.body)
            #expect(t.ran == [0, 0, 0, 2, 2, 2, 2])
            #expect(tuner.decisions.first?.ms == [3, nil, 2] && tuner.decisions.first?.chosen == 2)
            #expect(tuner.decisions.first?.description.contains("c1 not timed") == true)
        }
    }

    /// On the emulator with made-up costs per kernel: the flash backward tries every way of summing dq (serially,
    /// serially loaded late, by the last block) at both entry points (WHOLE, general), and the forward both of its
    /// entry points, at their first call for a shape, keeps the cheapest, launches only it afterwards, and gives the
    /// untuned call's bits either way.
    @Test func theFlashBackwardTunesItsWaysOfSummingDQ() { Self.unswitched { Self.flashBackwardTunes() } }

    static func flashBackwardTunes() {
        let shape = (1, 3, 100, 150, 72, 72)                            // 3 heads, 3 key tiles, Dh = Dv = 72 → d80
        let plain = LaunchTuner.$allowed.withValue(false) { FlashBF16OperandTests.run(shape, bf16: true) }
        let dkdv = "attention_flash_bf16_direct_in16_backward_dkdv_d80", forward = "attention_flash_bf16_direct_in16_forward_d80"
        for (cheapest, chosen, forwardChosen) in [([dkdv + "sl", forward], "dq serially, loaded late, general entry", "general entry, 64-row tiles"),
                                                  ([dkdv + "w", forward + "w"], "dq by the last block", "WHOLE entry, 128-row tiles")] {
            let tuner = LaunchTuner()
            let clock = EmulatedDriver.LaunchClock { cheapest.contains($0) ? 1 : $0.hasPrefix(dkdv) || $0.hasPrefix(forward) ? 5 : 0.01 }
            let first = Self.tuning(tuner, clock) { FlashBF16OperandTests.run(shape, bf16: true) }
            for (i, name) in ["out", "lse", "dq", "dk", "dv"].enumerated() { #expect(first[i] == plain[i], "\(name), \(chosen)") }
            let tried = Set(clock.names.filter { $0.hasPrefix(dkdv) || $0.hasPrefix(forward) })
            #expect(tried == Set(["w", "ws", "wsl", "", "s", "sl"].map { dkdv + $0 } + [forward, forward + "w"]), "\(tried.sorted())")
            let decided = Dictionary(uniqueKeysWithValues: tuner.decisions.map { ($0.key.hasPrefix("flash forward"), $0.names[$0.chosen]) })
            #expect(decided == [false: chosen, true: forwardChosen], "\(tuner.decisions)")
            // Kept: the next call (other values) launches only the chosen entry points, with the untuned bits.
            let before = clock.names.count
            let again = Self.tuning(tuner, clock) { FlashBF16OperandTests.run(shape, bf16: true, seed: 7) }
            let plainAgain = LaunchTuner.$allowed.withValue(false) { FlashBF16OperandTests.run(shape, bf16: true, seed: 7) }
            #expect(again == plainAgain)
            #expect(clock.names[before...].filter { $0.hasPrefix(dkdv) || $0.hasPrefix(forward) } == [cheapest[1], cheapest[0]])
        }
    }

    /// A switch removes the ways it rules out: `HASTE_FLASH_DQ_SERIAL=0` leaves the last block at both entry points.
    @Test func switchesLimitTheCandidates() { Self.unswitched { Self.switchesLimit() } }

    static func switchesLimit() {
        let shape = (1, 3, 100, 150, 72, 72)
        let tuner = LaunchTuner()
        let clock = EmulatedDriver.LaunchClock { _ in 1 }
        _ = CUDABackend.$flashDQSerial.withValue(false) { Self.tuning(tuner, clock) { FlashBF16OperandTests.run(shape, bf16: true) } }
        let dkdv = tuner.decisions.first { $0.key.hasPrefix("flash dk/dv") }
        #expect(dkdv?.names == ["dq by the last block", "dq by the last block, general entry"], "\(tuner.decisions)")
    }

    /// The row kernels' alternatives too: modulatedLayerNorm's forward by warp or by block, its backward with the
    /// chunk sums in the dx pass or dx by warp or block and the sums' kernel, the gated residual's backward in one
    /// pass or two kernels. With the block kernels and the two kernels made cheapest, those are kept, with the
    /// untuned bits (FusedMLNSumsTests' and FusedGatedBackwardTests' cases).
    @Test func theRowKernelsAreTunedToo() {
        CUDABackend.$rowWarpAllowed.withValue(true) {
            CUDABackend.$fusedMLNPartialsAllowed.withValue(true) {
                CUDABackend.$fusedGatedBackwardAllowed.withValue(true) { Self.rowKernels() }
            }
        }
    }

    static func rowKernels() {
        let (batch, tokens, cols) = (2, 17, 1152)
        let plainMLN = LaunchTuner.$allowed.withValue(false) { FusedMLNSumsTests.run(batch: batch, tokens: tokens, cols: cols) }
        let plainGated = LaunchTuner.$allowed.withValue(false) {
            FusedGatedBackwardTests.run(batch: batch, tokens: tokens, cols: cols, low: true, y16: true, d16: true)
        }
        let tuner = LaunchTuner()
        // the by-warp entry points ("…_w36") and the one-pass gated backward dear, everything else cheap
        let clock = EmulatedDriver.LaunchClock { $0.hasSuffix("_w36") || $0.hasPrefix("fused_gated_backward_both") ? 5 : 1 }
        let mln = Self.tuning(tuner, clock) { FusedMLNSumsTests.run(batch: batch, tokens: tokens, cols: cols) }
        let gated = Self.tuning(tuner, clock) {
            FusedGatedBackwardTests.run(batch: batch, tokens: tokens, cols: cols, low: true, y16: true, d16: true)
        }
        #expect(mln == plainMLN && gated == plainGated)
        let chosen = tuner.decisions.map { ($0.key, $0.names[$0.chosen], $0.names) }
        #expect(chosen.filter { $0.0.hasPrefix("modulatedLayerNorm forward") }.map(\.1) == ["rows by block"], "\(chosen)")
        // backward: 4 calls (dy float32 or bf16, with or without the residual), each its own key
        let backward = chosen.filter { $0.0.hasPrefix("modulatedLayerNorm backward") }
        #expect(backward.count == 4 && backward.allSatisfy { $0.1 == "rows by block" && $0.2 == ["rows by warp, sums in the dx pass", "rows by warp (w36)", "rows by block"] },
                "\(backward)")
        #expect(chosen.filter { $0.0.hasPrefix("gatedResidual backward") }.map(\.1) == ["two kernels"], "\(chosen)")
        // Kept: again, only block kernels and the two gated kernels are launched.
        let before = clock.names.count
        _ = Self.tuning(tuner, clock) { FusedMLNSumsTests.run(batch: batch, tokens: tokens, cols: cols) }
        _ = Self.tuning(tuner, clock) { FusedGatedBackwardTests.run(batch: batch, tokens: tokens, cols: cols, low: true, y16: true, d16: true) }
        let later = clock.names[before...]
        #expect(!later.contains { $0.hasSuffix("_w36") || $0.hasPrefix("fused_gated_backward_both") } && later.contains("fused_mln_forward"),
                "\(later)")
    }

    /// The softmax family's rows by warp or by block (softmax and log-softmax forward and backward, the bf16 pair, the
    /// soft cross-entropy): with the by-warp entry points made dearer, the block kernels are kept, with the untuned
    /// bits (SoftmaxWarpTests' cases), and launched alone from then on.
    @Test func theSoftmaxRowsAreTunedToo() {
        CUDABackend.$rowWarpAllowed.withValue(true) {
            let (rows, cols) = (19, 100)
            func all() -> [[UInt32]] {
                SoftmaxWarpTests.run(rows: rows, cols: cols) + SoftmaxWarpTests.crossEntropy([9, 7], [9, 7], seed: 3) { ($0, $1) }
            }
            let plain = LaunchTuner.$allowed.withValue(false) { all() }
            let tuner = LaunchTuner(), clock = EmulatedDriver.LaunchClock { $0.hasSuffix("_w") ? 5 : 1 }
            #expect(Self.tuning(tuner, clock) { all() } == plain)
            let chosen = tuner.decisions.map { ($0.key, $0.names[$0.chosen], $0.names) }
            let shape = " rows \(rows), cols \(cols)"
            #expect(Set(chosen.map(\.0)) == Set(["softmax_forward_f32", "softmax_forward_f32 log", "softmax_backward_f32",
                                                "softmax_backward_f32 log", "softmax_forward_bf16", "softmax_backward_bf16"]
                                                .map { $0 + shape } + ["soft_cross_entropy_f32 rows 9, cols 7"]), "\(chosen)")
            #expect(chosen.allSatisfy { $0.1 == "rows by block" && $0.2 == ["rows by warp (w)", "rows by block"] }, "\(chosen)")
            let before = clock.names.count
            #expect(Self.tuning(tuner, clock) { all() } == plain)
            let later = clock.names[before...]
            #expect(!later.contains { $0.hasSuffix("_w") } && later.contains("softmax_forward_bf16"), "\(later)")
        }
    }

    /// A tiny HASTE run in bf16 on the emulator, tuned with costs that make every rule's choice lose: its losses are
    /// the untuned run's bit for bit, and log.txt names each decision once (cuda: tuned …).
    @Test func aTunedTrainingRunGivesTheUntunedLossesAndLogsItsChoices() throws {
        let dir = temporaryDirectory()
        var c = tinyRunConfig(dir)
        c.encWeights = try writeTinyTeacher(dir, c)
        (c.mixedPrecision, c.maxTrainSteps) = ("bf16", 2)
        c.expName = "untuned"
        try LaunchTuner.$allowed.withValue(false) { try Trainer(config: c, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train() }
        c.expName = "tuned"
        // Costs that make every rule's choice the dearer one: by-warp rows (the softmax family's too), the one-pass
        // gated backward and the early serial dq load cost more than the block rows, the two gated kernels and the late
        // load.
        let tuner = LaunchTuner(), clock = EmulatedDriver.LaunchClock { name in
            name.hasSuffix("sl") ? 0.5 : name.range(of: "_w[0-9]*$", options: .regularExpression) != nil
                || name.hasPrefix("fused_gated_backward_both") ? 3 : 1
        }
        try Self.unswitched {
            try Self.tuning(tuner, clock) { try Trainer(config: c, dataset: SyntheticDataset(), device: EmulatedCUDA.device).train() }
        }
        let untuned = try metricLosses("\(dir)/untuned"), tuned = try metricLosses("\(dir)/tuned")
        #expect(untuned.count == 2 && tuned == untuned, "tuned \(tuned) vs \(untuned)")
        let log = try String(contentsOfFile: "\(dir)/tuned/log.txt", encoding: .utf8).split(separator: "\n").filter { $0.contains(": tuned ") }
        #expect(log.count == tuner.decisions.count && Set(log).count == log.count && log.count >= 3, "\(log)")
        #expect(tuner.decisions.contains { $0.key.hasPrefix("flash dk/dv") } && tuner.decisions.contains { $0.key.hasPrefix("modulatedLayerNorm") },
                "\(tuner.decisions)")
        // None of the rules' choices: the tuned run took another way everywhere, with the same losses.
        #expect(tuner.decisions.allSatisfy { $0.chosen != 0 }, "\(tuner.decisions)")
    }

    /// `body` on the emulator with tuning on, `tuner` in the backend's place and `clock` timing the launches.
    static func tuning<R>(_ tuner: LaunchTuner, _ clock: EmulatedDriver.LaunchClock, _ body: () throws -> R) rethrows -> R {
        try LaunchTuner.$allowed.withValue(true) {
            try CUDABackend.$tunerOverride.withValue(tuner) { try EmulatedDriver.$launchClock.withValue(clock) { try body() } }
        }
    }

    /// `body` with every dq way and entry point allowed and the heuristic's choice, whatever the environment says.
    static func unswitched<R>(_ body: () throws -> R) rethrows -> R {
        try CUDABackend.$flashDQSerial.withValue(nil) {
            try CUDABackend.$flashDQLastBlockAllowed.withValue(true) {
                try CUDABackend.$flashDQEarlyLoad.withValue(true) { try CUDABackend.$flashWholeAllowed.withValue(true) { try body() } }
            }
        }
    }
}
