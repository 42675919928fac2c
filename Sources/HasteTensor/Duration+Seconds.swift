extension Duration {
    /// The duration in seconds as a Double (a clock reading's difference, for timings and reports).
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
