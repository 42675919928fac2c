import HasteModels

/// The tiny models the selftest runs (TinyHASTE's student and teacher, TorchFixtureCheck's fixture models): patch 2
/// and encoder depth 2 for every SiT, one projector.
extension SiTConfig {
    static func selftestTiny(input: Int, channels: Int, hidden: Int, depth: Int, heads: Int, classes: Int,
                             projector: Int, projectorHidden: Int) -> SiTConfig {
        var c = SiTConfig()
        (c.inputSize, c.patchSize, c.inChannels, c.hiddenSize, c.depth, c.numHeads) = (input, 2, channels, hidden, depth, heads)
        (c.numClasses, c.encoderDepth, c.projectorDims, c.projectorHidden) = (classes, 2, [projector], projectorHidden)
        return c
    }
}

extension DINOv2Config {
    /// A tiny DINOv2 ViT on a grid × grid patch grid (`checkpointGrid` the position table's, nil: the default).
    static func selftestTiny(patch: Int, width: Int, depth: Int, heads: Int, grid: Int, checkpointGrid: Int? = nil) -> DINOv2Config {
        var c = DINOv2Config()
        (c.patchSize, c.embedDim, c.depth, c.numHeads, c.grid) = (patch, width, depth, heads, grid)
        if let checkpointGrid { c.checkpointGrid = checkpointGrid }
        return c
    }
}
