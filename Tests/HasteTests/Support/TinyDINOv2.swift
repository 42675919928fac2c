import HasteModels
import HasteTensor

/// A frozen DINOv2 of 3 blocks (patch 2, width 24, 3 heads, a 4×4 grid) with random values everywhere (LayerScale's
/// 1e-5 init would hide the branches in the residual sums), on `device`.
func tinyRandomDINOv2(valueSeed: UInt64, on device: Device) -> DINOv2 {
    var c = DINOv2Config()
    (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (2, 24, 3, 3, 4)
    let model = DINOv2(c, seed: 5, frozen: true)
    for (i, key) in model.store.keys.enumerated() {
        let p = model.store[key]!
        p.copyValues(from: Tensor.randn(p.shape, seed: valueSeed + UInt64(i)) * 0.3)
    }
    model.store.move(to: device)
    return model
}
