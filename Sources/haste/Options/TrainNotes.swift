import HasteTraining

extension Train {
    /// Alignment flags given on a run that has no alignment (enc-type none, both coefficients 0, or
    /// early-stop-point 0) change nothing: one line says so instead of ignoring them silently (issue #18).
    func idleAlignmentNote(_ c: TrainConfig) -> String? {
        guard !c.usesTeacher else { return nil }
        let reason = c.encType == "none" ? "enc-type none" : c.earlyStopPoint == 0 ? "early-stop-point 0" : "proj-coeff and attn-coeff are 0"
        var idle = [("enc-weights", encWeights), ("early-stop-point", earlyStopPoint)]
        if c.encType == "none" || c.earlyStopPoint == 0 { idle += [("proj-coeff", projCoeff), ("attn-coeff", attnCoeff)] }
        let given = idle.filter { $0.1 != nil }.map { "--" + $0.0 }
        guard !given.isEmpty else { return nil }
        return "\(given.joined(separator: ", ")) \(given.count == 1 ? "has" : "have") no effect: this run has no alignment and no teacher (\(reason))"
    }
}
