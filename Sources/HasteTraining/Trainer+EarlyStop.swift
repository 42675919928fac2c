extension Trainer {
    /// After the update that reaches `early-stop-point`, alignment is off for good (spec/method.md §9): say so in
    /// log.txt and on the console, and, with skip-teacher-after-stop (the default; spec README #4), drop the
    /// teacher so its weights are freed. A run resumed past the stop point loads the teacher but never runs it.
    func stopAlignmentIfDue() {
        guard state.step == config.earlyStopPoint, teacher != nil else { return }
        if config.skipTeacherAfterStop {
            teacher = nil
            say("step \(state.step): alignment stopped; teacher unloaded")
        } else {
            say("step \(state.step): alignment stopped; teacher still run and its output discarded (skip-teacher-after-stop false, as the reference)")
        }
    }
}
