import ArgumentParser
import HasteIO

/// `haste inspect FILE`: the tensors (name, dtype, shape, bytes) and metadata of a .safetensors, .npy or
/// PyTorch file (torch.save, TorchScript; its non-tensor values such as `steps` and `args.*` as metadata).
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the tensors and metadata of a .safetensors, .npy or PyTorch .pt/.pth file.")

    @Argument(help: "A .safetensors, .npy or PyTorch (.pt, .pth, TorchScript) file.") var file: String
    @Flag(help: "Print one JSON object {file, format, tensors: [{name, dtype, shape, bytes}], metadata}.")
    var json = false

    func run() throws {
        print(try FileInspector.inspect(file).render(json: json))
    }
}
