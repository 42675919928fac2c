import HasteTensor

/// The blocks of the FID Inception network, mirroring pytorch-fid's `pytorch_fid/inception.py`
/// (`FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE_1`/`_2`, and torchvision's `BasicConv2d`, `InceptionB`,
/// `InceptionD` it reuses), which ports TF's inception-2015-12-05 graph (spec/evaluation.md §1).
/// Concatenation order = branch order = channel order. Inference only: BatchNorm is folded into the conv.

/// torch: `BasicConv2d` = Conv2d(bias=False) → BatchNorm2d(eps=0.001, running statistics) → ReLU, with the
/// BatchNorm folded at load into the conv: W' = W·γ/√(var + ε), b' = β − mean·γ/√(var + ε) (γ = 1 when
/// the weights have none: the TF graph's batch norms have no scale).
struct BasicConv {
    static let eps = 0.001
    let weight: Tensor, bias: Tensor
    let stride: Int, padding: (Int, Int)

    init(_ r: InceptionWeightReader, _ name: String, _ cin: Int, _ cout: Int, kernel: (Int, Int),
         stride: Int = 1, padding: (Int, Int) = (0, 0)) {
        let w = r.take("\(name).conv.weight", [cout, cin, kernel.0, kernel.1])
        let gamma = r.takeOptional("\(name).bn.weight", [cout])
        let beta = r.take("\(name).bn.bias", [cout]), mean = r.take("\(name).bn.running_mean", [cout])
        let variance = r.take("\(name).bn.running_var", [cout])
        r.ignore("\(name).bn.num_batches_tracked")
        // Folded in float64, then stored in float32.
        let scale = (gamma ?? Tensor.ones([cout], dtype: .float64)) / (variance + BasicConv.eps).sqrt()   // [cout]
        weight = (w * scale.reshaped([cout, 1, 1, 1])).to(.float32).to(r.device)
        bias = (beta - mean * scale).to(.float32).to(r.device)
        self.stride = stride
        self.padding = padding
    }

    /// x [N, cin, H, W] → [N, cout, Ho, Wo].
    func callAsFunction(_ x: Tensor) -> Tensor {
        x.conv2d(weight, bias, stride: stride, padding: padding).relu()
    }
}

/// pytorch-fid `FIDInceptionA` (Mixed_5b/c/d): 35×35 branches; the pool averages 3×3 EXCLUDING padding.
struct InceptionA {
    let branch1x1: BasicConv, branch5x5: [BasicConv], branch3x3dbl: [BasicConv], branchPool: BasicConv

    init(_ r: InceptionWeightReader, _ name: String, _ cin: Int, poolFeatures: Int) {
        branch1x1 = BasicConv(r, "\(name).branch1x1", cin, 64, kernel: (1, 1))
        branch5x5 = [BasicConv(r, "\(name).branch5x5_1", cin, 48, kernel: (1, 1)),
                     BasicConv(r, "\(name).branch5x5_2", 48, 64, kernel: (5, 5), padding: (2, 2))]
        branch3x3dbl = [BasicConv(r, "\(name).branch3x3dbl_1", cin, 64, kernel: (1, 1)),
                        BasicConv(r, "\(name).branch3x3dbl_2", 64, 96, kernel: (3, 3), padding: (1, 1)),
                        BasicConv(r, "\(name).branch3x3dbl_3", 96, 96, kernel: (3, 3), padding: (1, 1))]
        branchPool = BasicConv(r, "\(name).branch_pool", cin, poolFeatures, kernel: (1, 1))
    }

    /// [N, cin, 35, 35] → [N, 224 + poolFeatures, 35, 35].
    func callAsFunction(_ x: Tensor) -> Tensor {
        let pool = branchPool(x.avgPool2d(kernel: 3, stride: 1, padding: 1, countIncludePad: false))
        return Tensor.cat([branch1x1(x), chain(branch5x5, x), chain(branch3x3dbl, x), pool], axis: 1)
    }
}

/// torchvision `InceptionB` (Mixed_6a): stride-2 reduction 35 → 17; the pool is a 3×3/2 max of the input.
struct InceptionB {
    let branch3x3: BasicConv, branch3x3dbl: [BasicConv]

    init(_ r: InceptionWeightReader, _ name: String, _ cin: Int) {
        branch3x3 = BasicConv(r, "\(name).branch3x3", cin, 384, kernel: (3, 3), stride: 2)
        branch3x3dbl = [BasicConv(r, "\(name).branch3x3dbl_1", cin, 64, kernel: (1, 1)),
                        BasicConv(r, "\(name).branch3x3dbl_2", 64, 96, kernel: (3, 3), padding: (1, 1)),
                        BasicConv(r, "\(name).branch3x3dbl_3", 96, 96, kernel: (3, 3), stride: 2)]
    }

    /// [N, cin, 35, 35] → [N, 480 + cin, 17, 17].
    func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.cat([branch3x3(x), chain(branch3x3dbl, x), x.maxPool2d(kernel: 3, stride: 2)], axis: 1)
    }
}

/// pytorch-fid `FIDInceptionC` (Mixed_6b–6e): factorised 7×7 as (1, 7)/(7, 1) pairs; pool excludes padding.
struct InceptionC {
    let branch1x1: BasicConv, branch7x7: [BasicConv], branch7x7dbl: [BasicConv], branchPool: BasicConv

    init(_ r: InceptionWeightReader, _ name: String, _ cin: Int, channels7x7 c7: Int) {
        let row = (kernel: (1, 7), padding: (0, 3)), col = (kernel: (7, 1), padding: (3, 0))
        branch1x1 = BasicConv(r, "\(name).branch1x1", cin, 192, kernel: (1, 1))
        branch7x7 = [BasicConv(r, "\(name).branch7x7_1", cin, c7, kernel: (1, 1)),
                     BasicConv(r, "\(name).branch7x7_2", c7, c7, kernel: row.kernel, padding: row.padding),
                     BasicConv(r, "\(name).branch7x7_3", c7, 192, kernel: col.kernel, padding: col.padding)]
        branch7x7dbl = [BasicConv(r, "\(name).branch7x7dbl_1", cin, c7, kernel: (1, 1)),
                        BasicConv(r, "\(name).branch7x7dbl_2", c7, c7, kernel: col.kernel, padding: col.padding),
                        BasicConv(r, "\(name).branch7x7dbl_3", c7, c7, kernel: row.kernel, padding: row.padding),
                        BasicConv(r, "\(name).branch7x7dbl_4", c7, c7, kernel: col.kernel, padding: col.padding),
                        BasicConv(r, "\(name).branch7x7dbl_5", c7, 192, kernel: row.kernel, padding: row.padding)]
        branchPool = BasicConv(r, "\(name).branch_pool", cin, 192, kernel: (1, 1))
    }

    /// [N, 768, 17, 17] → ([N, 768, 17, 17], branch1x1's output [N, 192, 17, 17]: sFID's "mixed_6/conv" at Mixed_6d).
    func forward(_ x: Tensor) -> (Tensor, Tensor) {
        let b1 = branch1x1(x)
        let pool = branchPool(x.avgPool2d(kernel: 3, stride: 1, padding: 1, countIncludePad: false))
        return (Tensor.cat([b1, chain(branch7x7, x), chain(branch7x7dbl, x), pool], axis: 1), b1)
    }
}

/// torchvision `InceptionD` (Mixed_7a): stride-2 reduction 17 → 8.
struct InceptionD {
    let branch3x3: [BasicConv], branch7x7x3: [BasicConv]

    init(_ r: InceptionWeightReader, _ name: String, _ cin: Int) {
        branch3x3 = [BasicConv(r, "\(name).branch3x3_1", cin, 192, kernel: (1, 1)),
                     BasicConv(r, "\(name).branch3x3_2", 192, 320, kernel: (3, 3), stride: 2)]
        branch7x7x3 = [BasicConv(r, "\(name).branch7x7x3_1", cin, 192, kernel: (1, 1)),
                       BasicConv(r, "\(name).branch7x7x3_2", 192, 192, kernel: (1, 7), padding: (0, 3)),
                       BasicConv(r, "\(name).branch7x7x3_3", 192, 192, kernel: (7, 1), padding: (3, 0)),
                       BasicConv(r, "\(name).branch7x7x3_4", 192, 192, kernel: (3, 3), stride: 2)]
    }

    /// [N, 768, 17, 17] → [N, 1280, 8, 8].
    func callAsFunction(_ x: Tensor) -> Tensor {
        Tensor.cat([chain(branch3x3, x), chain(branch7x7x3, x), x.maxPool2d(kernel: 3, stride: 2)], axis: 1)
    }
}

/// pytorch-fid `FIDInceptionE_1` (Mixed_7b: average pool excluding padding) and `FIDInceptionE_2`
/// (Mixed_7c: MAX pool, a quirk of the TF graph).
struct InceptionE {
    let branch1x1: BasicConv, branch3x3: BasicConv, branch3x3a: BasicConv, branch3x3b: BasicConv
    let branch3x3dbl: [BasicConv], branch3x3dblA: BasicConv, branch3x3dblB: BasicConv, branchPool: BasicConv
    let maxPool: Bool

    init(_ r: InceptionWeightReader, _ name: String, _ cin: Int, maxPool: Bool) {
        branch1x1 = BasicConv(r, "\(name).branch1x1", cin, 320, kernel: (1, 1))
        branch3x3 = BasicConv(r, "\(name).branch3x3_1", cin, 384, kernel: (1, 1))
        branch3x3a = BasicConv(r, "\(name).branch3x3_2a", 384, 384, kernel: (1, 3), padding: (0, 1))
        branch3x3b = BasicConv(r, "\(name).branch3x3_2b", 384, 384, kernel: (3, 1), padding: (1, 0))
        branch3x3dbl = [BasicConv(r, "\(name).branch3x3dbl_1", cin, 448, kernel: (1, 1)),
                        BasicConv(r, "\(name).branch3x3dbl_2", 448, 384, kernel: (3, 3), padding: (1, 1))]
        branch3x3dblA = BasicConv(r, "\(name).branch3x3dbl_3a", 384, 384, kernel: (1, 3), padding: (0, 1))
        branch3x3dblB = BasicConv(r, "\(name).branch3x3dbl_3b", 384, 384, kernel: (3, 1), padding: (1, 0))
        branchPool = BasicConv(r, "\(name).branch_pool", cin, 192, kernel: (1, 1))
        self.maxPool = maxPool
    }

    /// [N, cin, 8, 8] → [N, 2048, 8, 8] (320 + 768 + 768 + 192).
    func callAsFunction(_ x: Tensor) -> Tensor {
        let a = branch3x3(x), d = chain(branch3x3dbl, x)
        let pooled = maxPool ? x.maxPool2d(kernel: 3, stride: 1, padding: 1)
                             : x.avgPool2d(kernel: 3, stride: 1, padding: 1, countIncludePad: false)
        return Tensor.cat([branch1x1(x), branch3x3a(a), branch3x3b(a), branch3x3dblA(d), branch3x3dblB(d),
                           branchPool(pooled)], axis: 1)
    }
}

/// Applies convs in sequence (a torch `nn.Sequential` of a branch).
func chain(_ convs: [BasicConv], _ x: Tensor) -> Tensor { convs.reduce(x) { $1($0) } }
