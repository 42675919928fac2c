import HasteTensor

/// The one place SD-VAE checkpoints are renamed (STYLE §2.6; spec/vae.md §5.1). Three spellings exist:
/// current diffusers (our keys), older diffusers (0.4–0.9, the hub files' first upload) with `query`, `key`,
/// `value`, `proj_attn` in the mid attention, and the original LDM/CompVis names (`encoder.down.0.block.1`,
/// 1×1-conv attention projections, decoder levels indexed in reverse) under an optional `first_stage_model.`.
extension AutoencoderKL {
    /// Converts a state dict in any of the three spellings to diffusers' current keys; current keys pass through.
    public static func adapt(_ state: [String: Tensor]) -> [String: Tensor] {
        var s = state
        let prefix = "first_stage_model."
        if s.keys.contains(where: { $0.hasPrefix(prefix) }) {
            s = Dictionary(uniqueKeysWithValues: s.compactMap { k, v in k.hasPrefix(prefix) ? (String(k.dropFirst(prefix.count)), v) : nil })
        }
        let isLDM = s.keys.contains { $0.hasPrefix("encoder.down.") || $0.hasPrefix("encoder.mid.") }
        let levels = Set(s.keys.compactMap { k -> Int? in
            guard k.hasPrefix("decoder.up.") else { return nil }
            return Int(k.dropFirst("decoder.up.".count).prefix { $0 != "." })
        }).count
        var out: [String: Tensor] = [:]
        for (key, value) in s {
            var k = isLDM ? ldmToDiffusers(key, decoderLevels: levels) : key
            k = renameOldAttention(k)
            // LDM's attention projections are 1×1 convs [C, C, 1, 1]; diffusers' are Linear [C, C].
            let isProjection = [".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight"].contains { k.hasSuffix($0) }
            out[k] = isProjection && value.rank == 4 ? value.reshaped([value.shape[0], value.shape[1]]) : value
        }
        return out
    }

    /// diffusers 0.4–0.9 attention names → current ones.
    static func renameOldAttention(_ key: String) -> String {
        let renames = [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")]
        for (old, new) in renames where key.contains(".attentions.") && key.contains(old) {
            return key.replacingOccurrences(of: old, with: new)
        }
        return key
    }

    /// One LDM key → diffusers. `decoderLevels`: LDM's decoder `up.{k}` is diffusers' `up_blocks.{levels − 1 − k}`.
    static func ldmToDiffusers(_ key: String, decoderLevels: Int) -> String {
        var rest = key.split(separator: ".").map(String.init)
        guard rest.count >= 3, rest[0] == "encoder" || rest[0] == "decoder" else { return key }
        var out = [rest.removeFirst()]
        switch rest[0] {
        case "down", "up":                          // down.{i}.block.{j}.… | down.{i}.downsample.conv.…
            guard let level = Int(rest[1]) else { return key }
            out += rest[0] == "down" ? ["down_blocks", "\(level)"] : ["up_blocks", "\(decoderLevels - 1 - level)"]
            rest.removeFirst(2)
            if rest.first == "block", rest.count > 1 {
                out += ["resnets", rest[1]]
                rest.removeFirst(2)
            } else if rest.first == "downsample" || rest.first == "upsample" {
                out += [rest.removeFirst() + "rs", "0"]
            }
        case "mid":                                 // mid.block_1 | mid.block_2 | mid.attn_1.{norm,q,k,v,proj_out}
            let sub = rest[1]
            rest.removeFirst(2)
            out += ["mid_block"] + (sub == "block_1" ? ["resnets", "0"] : sub == "block_2" ? ["resnets", "1"] : ["attentions", "0"])
            let attention = ["norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"]
            if sub.hasPrefix("attn"), let first = rest.first, let renamed = attention[first] { rest[0] = renamed }
        case "norm_out":
            rest[0] = "conv_norm_out"
        default:
            break
        }
        if rest.first == "nin_shortcut" { rest[0] = "conv_shortcut" }
        return (out + rest).joined(separator: ".")
    }
}
