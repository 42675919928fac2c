import ArgumentParser
import HasteIO

/// `haste inspect FILE`: the tensors (name, dtype, shape, bytes) and metadata of a .safetensors or .npy file.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the tensors and metadata of a .safetensors or .npy file.")

    @Argument(help: "A .safetensors or .npy file.") var file: String
    @Flag(help: "Print one JSON object {file, format, tensors: [{name, dtype, shape, bytes}], metadata}.")
    var json = false

    func run() throws {
        print(try FileInspector.inspect(file).render(json: json))
    }
}
