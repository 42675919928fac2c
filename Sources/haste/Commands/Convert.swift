import ArgumentParser
import Foundation
import HasteIO

/// `haste convert IN OUT.safetensors [--select KEY]`: a PyTorch file (torch.save zip or legacy, TorchScript)
/// to safetensors, tensors bit for bit; e.g. `--select ema` turns a HASTE/REPA training checkpoint into the
/// plain EMA state dict that `haste train --enc-weights`, PyTorch and safetensors readers load.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a PyTorch .pt/.pth/TorchScript file to safetensors.",
        discussion: """
        Tensors keep their dtype and values; names are their dotted paths in the file (relative to --select).
        Non-tensor values (steps, args) go to the safetensors metadata. `haste inspect IN` lists the paths.
        Views are written contiguously; views larger than their storage (torch `expand`) are refused past 16 MiB
        per file unless --allow-expanding-views is given.
        Examples:
          haste convert 0250000.pt sit-xl-2-ema.safetensors --select ema
          haste convert dinov2_vitb14_pretrain.pth dinov2_vitb14.safetensors
        """)

    @Argument(help: "A PyTorch file (.pt, .pth, .bin, TorchScript).") var input: String
    @Argument(help: "The safetensors file to write.") var output: String
    @Option(help: "Dotted path of the part to convert, e.g. ema, model, opt.state (default: everything).")
    var select: String?
    @Flag(help: """
        Write broadcast or overlapping views (stride 0, torch `expand`) in full even when such views, larger than \
        their storage, take more than 16 MiB together (refused by default: a tiny file could expand into gigabytes).
        """)
    var allowExpandingViews = false

    func validate() throws {
        if !output.lowercased().hasSuffix(".safetensors") { throw ValidationError("OUT must end in .safetensors, got '\(output)'") }
        if input == output { throw ValidationError("IN and OUT are the same file") }
    }

    func run() throws {
        let r = try TorchCheckpoint.convert(input, to: output, select: select,
                                            expandingViewLimit: allowExpandingViews ? Int.max : TorchTensor.expandingViewLimit)
        let mb = Double(r.byteCount) / 1e6
        print(String(format: "%@: %d tensors, %.1f MB (read %.2f s, %.0f MB/s; wrote %.2f s)", output, r.tensors, mb,
                     r.readSeconds, mb / max(r.readSeconds, 1e-9), r.writeSeconds))
    }
}
