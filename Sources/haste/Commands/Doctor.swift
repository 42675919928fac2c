import ArgumentParser

/// `haste doctor`: what this machine offers haste (versions, BLAS, CPU features and FMA peak, optional
/// libraries, CUDA).
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report versions, BLAS threads, CPU features and FMA peak, and the optional libraries found.",
        discussion: """
        The float32 FMA peak is printed twice: on paper (cores × clock × lanes × FMA units × 2, each input with where \
        it came from) and measured (the best rate of a large sgemm on --threads threads, about 0.2 s, on the float32 \
        GEMM haste runs: its own AVX-512 kernel where the CPU has AVX-512F, else OpenBLAS).
        """)

    @OptionGroup var runtime: RuntimeOptions
    @Flag(help: "Print JSON {cpu, cpu_flags, threads, fma_peak_gflops, fma_peak_theoretical_gflops, …} instead.")
    var json = false

    func run() throws {
        runtime.applyThreads()   // the report shows the thread count in effect; --device is not opened here
        let report = SystemReport.collect(threads: runtime.threads)
        print(json ? report.json() : report.render())
    }
}
