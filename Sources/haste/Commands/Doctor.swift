import ArgumentParser

/// `haste doctor`: what this machine offers haste (versions, BLAS, CPU features, optional libraries, CUDA).
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report versions, BLAS threads, CPU features and the optional libraries found.")

    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.applyThreads()   // the report shows the thread count in effect; --device is not opened here
        print(SystemReport.collect().render())
    }
}
