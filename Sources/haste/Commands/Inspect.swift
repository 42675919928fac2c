import ArgumentParser
import HasteIO

/// `haste inspect FILE`: the tensors (name, dtype, shape, bytes) and metadata of a .safetensors, .npy, .npz or
/// PyTorch file (torch.save, TorchScript; its non-tensor values such as `steps` and `args.*` as metadata), or the
/// size of a PNG or JPEG image (decoded), or the datasets and attributes of an HDF5 file (haste preprocess's .h5).
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the tensors and metadata of a .safetensors, .npy, .npz, HDF5 (.h5) or PyTorch .pt/.pth file, or decode an image.")

    @Argument(help: "A .safetensors, .npy, .npz, HDF5 (.h5) or PyTorch (.pt, .pth, TorchScript) file, or a PNG or JPEG image.")
    var file: String
    @Flag(help: "Print one JSON object {file, format, tensors: [{name, dtype, shape, bytes}], metadata}.")
    var json = false
    @Flag(help: "Also read every tensor's data as a load would (checksums, decompression, views), not only the header.")
    var verify = false

    func run() throws {
        print(try FileInspector.inspect(file, verify: verify).render(json: json))
    }
}
