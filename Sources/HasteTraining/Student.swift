import HasteModels
import HasteNN
import HasteTensor

/// What the student is conditioned on: class labels (SiT; int64 [B], the null class = numClasses) or caption
/// features (MMDiT; float32 [B, L, D], the null caption = the empty caption's features).
public enum Conditioning {
    case labels(Tensor)
    case context(Tensor)
}

/// The model the trainer trains, previews and checkpoints: a class-conditional SiT or a text-conditioned MMDiT.
/// Both return the velocity, the attention logits of the requested blocks and the projector outputs.
public protocol DenoisingStudent {
    var store: ParameterStore { get }
    /// x: (N, C, S, S); t: (N) in [0, 1] (t = 1 noise). `checkpointing`: recompute each block's activations in
    /// backward instead of keeping them (config key grad-checkpointing).
    func predict(_ x: Tensor, t: Tensor, condition: Conditioning, logitLayers: Set<Int>, projections: Bool,
                 checkpointing: Bool) -> SiTOutput
}

extension SiT: DenoisingStudent {
    public func predict(_ x: Tensor, t: Tensor, condition: Conditioning, logitLayers: Set<Int>, projections: Bool,
                        checkpointing: Bool) -> SiTOutput {
        guard case .labels(let y) = condition else { fatalError("SiT is class-conditional: it was given caption features") }
        return self(x, t: t, y: y, logitLayers: logitLayers, projections: projections, checkpointing: checkpointing)
    }
}

extension MMDiT: DenoisingStudent {
    public func predict(_ x: Tensor, t: Tensor, condition: Conditioning, logitLayers: Set<Int>, projections: Bool,
                        checkpointing: Bool) -> SiTOutput {
        guard case .context(let c) = condition else { fatalError("MMDiT is text-conditioned: it was given class labels") }
        return self(x, t: t, context: c, logitLayers: logitLayers, projections: projections, checkpointing: checkpointing)
    }
}

/// The student's configuration, resolved from `model` and the data (ModelFactory.swift).
public enum StudentConfig: Equatable {
    case sit(SiTConfig)
    case mmdit(MMDiTConfig)

    /// A fresh student with its initialisation drawn from `seed`.
    public func make(seed: UInt64 = 0) throws -> any DenoisingStudent {
        switch self {
        case .sit(let c): return try SiT(c, seed: seed)
        case .mmdit(let c): return try MMDiT(c, seed: seed)
        }
    }

    public var numHeads: Int {
        switch self {
        case .sit(let c): return c.numHeads
        case .mmdit(let c): return c.numHeads
        }
    }

    public var tokens: Int {
        switch self {
        case .sit(let c): return c.tokens
        case .mmdit(let c): return c.tokens
        }
    }

    /// The SiT configuration, for what only class-conditional models have (FID during training, benchmarks).
    public func sitConfig(for what: String) throws -> SiTConfig {
        guard case .sit(let c) = self else {
            throw HasteError.config(key: "model", detail: "\(what) is available for SiT models only, not for MMDiT")
        }
        return c
    }
}
