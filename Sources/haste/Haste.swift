import ArgumentParser

/// The `haste` command line (STYLE §2.8): thin commands that parse, validate and call one library entry point.
@main
struct Haste: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "haste",
        abstract: "Train and sample diffusion transformers with HASTE.",
        subcommands: [])
}
