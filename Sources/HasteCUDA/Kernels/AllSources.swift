extension CUDABackend {
    /// Every kernel family, for `haste selftest --compile-only` and the NVRTC compile test (Matmul is cuBLAS).
    public static var allSources: [KernelSource] {
        [memorySource, randomSource, elementwiseSource, reduceSource, softmaxSource, lossSource, optimizerSource, embeddingSource, movementSource, normSource, attentionSource, convSource, poolSource, resizeSource]
    }
}
