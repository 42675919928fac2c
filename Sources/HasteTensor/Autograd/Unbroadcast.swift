extension Tensor {
    /// Sums a broadcast gradient back to `target` shape: leading extra axes and axes where target has 1.
    /// torch: the reduction autograd applies after broadcasting binary ops.
    public func unbroadcast(to target: [Int]) -> Tensor {
        if shape == target { return self }
        let extra = rank - target.count
        require(extra >= 0, "unbroadcast: \(shape) cannot reduce to \(target)")
        var axes = Array(0..<extra)
        for (i, n) in target.enumerated() where n == 1 && shape[extra + i] != 1 { axes.append(extra + i) }
        let s = axes.isEmpty ? self : sum(axes: axes, keepDims: true)
        return s.reshaped(target)
    }
}
