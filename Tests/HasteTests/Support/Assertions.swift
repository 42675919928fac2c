import Testing
@testable import HasteTensor

/// Elementwise |a - b| ≤ atol + rtol·|b|, reporting the worst element.
func expectClose(_ a: Tensor, _ b: Tensor, atol: Double = 1e-6, rtol: Double = 1e-5, _ what: String = "",
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.shape == b.shape, "\(what) shape \(a.shape) vs \(b.shape)", sourceLocation: sourceLocation)
    guard a.shape == b.shape else { return }
    let x = a.scalars(as: Double.self), y = b.scalars(as: Double.self)
    var worst = 0, worstExcess = -Double.infinity
    for i in x.indices {
        let excess = Swift.abs(x[i] - y[i]) - (atol + rtol * Swift.abs(y[i]))
        if excess > worstExcess || excess.isNaN { worst = i; worstExcess = excess.isNaN ? .infinity : excess }
    }
    #expect(x.isEmpty || worstExcess <= 0, "\(what) element \(worst): \(x.isEmpty ? 0 : x[worst]) vs \(x.isEmpty ? 0 : y[worst])",
            sourceLocation: sourceLocation)
}

/// The trap message an exit test's child printed to stderr (`require` traps through fatalError, which prints
/// its message in every build configuration).
func trapMessage(_ result: ExitTest.Result?) -> String {
    String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
}
