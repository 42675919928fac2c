import ArgumentParser
import HasteIO

/// The `haste` command line (STYLE §2.8): thin commands that parse, validate and call one library entry point.
/// Thrown errors reach ArgumentParser, which prints `Error: <description>` and exits 1.
@main
struct Haste: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "haste",
        abstract: "Train and sample diffusion transformers with HASTE.",
        version: HasteVersion.current,
        subcommands: [Train.self, TrainTeacher.self, Generate.self, FID.self, Preprocess.self, Convert.self, Inspect.self,
                      Doctor.self, Bench.self, Selftest.self, Tokenize.self, Plot.self])
}
