import HasteTensor

/// conv2d forward rows of `haste bench ops` (issue 15: the SD-VAE and InceptionV3 convolutions), with bias, as
/// `F.conv2d` in Scripts/bench_torch.py (CONV_ROWS: the same names, shapes and work).
extension OpBenchmarks {
    /// name, x [N, Cin, H, W], Cout, kernel (kh, kw), stride, padding (height, width).
    static let convRows: [(String, [Int], Int, (Int, Int), Int, (Int, Int))] = [
        ("conv3x3 128→128 256² fwd", [1, 128, 256, 256], 128, (3, 3), 1, (1, 1)),    // VAE decoder, last block
        ("conv3x3 512→512 32² fwd", [1, 512, 32, 32], 512, (3, 3), 1, (1, 1)),       // VAE decoder, mid block
        ("conv3x3s2 128→128 256² fwd", [1, 128, 257, 257], 128, (3, 3), 2, (0, 0)),  // VAE encoder downsample (padded)
        ("conv1x1 256→128 128² fwd", [1, 256, 128, 128], 128, (1, 1), 1, (0, 0)),    // VAE shortcut
        ("conv3x3s2 288→384 35² fwd", [8, 288, 35, 35], 384, (3, 3), 2, (0, 0)),     // Inception Mixed_6a
        ("conv1x7 128→128 17² fwd", [8, 128, 17, 17], 128, (1, 7), 1, (0, 3)),       // Inception Mixed_6b
    ]

    static func convolutions(seed: UInt64, device: Device) -> [BenchCase] {
        convRows.map { name, x, cout, k, stride, padding in
            let oh = (x[2] + 2 * padding.0 - k.0) / stride + 1, ow = (x[3] + 2 * padding.1 - k.1) / stride + 1
            let flops = 2.0 * Double(x[0] * cout * oh * ow * x[1] * k.0 * k.1)
            let shape = "x \(x) w \([cout, x[1], k.0, k.1]) s\(stride) p\(padding)"
            return BenchCase(op: name, shape: shape, work: .flops(flops)) {
                let input = Tensor.randn(x, seed: seed, device: device)
                let w = Tensor.randn([cout, x[1], k.0, k.1], seed: seed + 1, device: device) * 0.02
                let b = Tensor.randn([cout], seed: seed + 2, device: device) * 0.02
                return { _ = input.conv2d(w, b, stride: stride, padding: padding) }
            }
        }
    }
}
