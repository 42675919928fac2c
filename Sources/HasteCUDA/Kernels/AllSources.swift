extension CUDABackend {
    /// Every kernel family, for `haste selftest --compile-only` and the NVRTC compile test (Matmul's GEMMs are cuBLAS; its family has only the k = 0 case).
    public static var allSources: [KernelSource] {
        [memorySource, randomSource, elementwiseSource, reduceSource, softmaxSource, lossSource, optimizerSource, embeddingSource, movementSource, normSource, attentionSource, flashAttentionSource, flashAttentionBF16Source, flashAttentionBF16AsyncSource, flashAttentionBF16In16Source, flashAttentionBF16AsyncIn16Source, flashAttentionBF16DirectIn16Source, flashAttentionTF32Source, convSource, poolSource, resizeSource, matmulSource, fusedSource]
    }
}
