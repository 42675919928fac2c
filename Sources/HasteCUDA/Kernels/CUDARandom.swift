import HasteTensor

extension CUDABackend {
    /// The random family: CPURandom.swift's counter-based streams. Philox4x32-10 block b of a fill is keyed by
    /// the seed with counter offset/4 + b and gives elements 4b..4b+3, so the integers are bit-identical to the
    /// CPU's; uniforms are (u >> 8)·2⁻²⁴ (exact); normals are the same Box–Muller computed in double as on the
    /// CPU, so they agree after rounding to float up to the device's double log/sqrt/cos/sin (≤ 2 ulp of double).
    static let randomSource = KernelSource(family: "random", kernels: ["fill_uniform_f32", "fill_normal_f32"], code: #"""
    /// Philox4x32-10 (Salmon et al. 2011) of the 64-bit counter (high words 0) and key, as CPURandom.philox.
    __device__ __forceinline__ void haste_philox(u64 counter, u64 key, u32* out) {
        u32 c0 = (u32)counter, c1 = (u32)(counter >> 32), c2 = 0u, c3 = 0u;
        u32 k0 = (u32)key, k1 = (u32)(key >> 32);
        for (int round = 0; round < 10; ++round) {
            u64 p0 = 0xD2511F53ull * (u64)c0, p1 = 0xCD9E8D57ull * (u64)c2;
            u32 hi0 = (u32)(p0 >> 32), lo0 = (u32)p0, hi1 = (u32)(p1 >> 32), lo1 = (u32)p1;
            u32 n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
            c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
    }
    /// [0, 1) from the top 24 bits (exact in float and double).
    __device__ __forceinline__ double haste_unit(u32 u) { return (double)(u >> 8) * 5.9604644775390625e-8; }

    extern "C" __global__ void fill_uniform_f32(float* dst, i64 count, u64 seed, u64 base) {
        i64 blocks = (count + 3) / 4;
        HASTE_GRID_STRIDE_LOOP(b, blocks) {
            u32 u[4];
            haste_philox(base + (u64)b, seed, u);
            i64 i = b * 4;
            for (int l = 0; l < 4; ++l)
                if (i + l < count) dst[i + l] = (float)haste_unit(u[l]);
        }
    }

    /// Box–Muller in double: r = √(−2·log(1 − u₀)) (1 − u₀ ∈ (0, 1], so the log is finite), θ = 2π·u₁.
    extern "C" __global__ void fill_normal_f32(float* dst, i64 count, u64 seed, u64 base) {
        i64 blocks = (count + 3) / 4;
        const double twoPi = 2.0 * 3.141592653589793;
        HASTE_GRID_STRIDE_LOOP(b, blocks) {
            u32 u[4];
            haste_philox(base + (u64)b, seed, u);
            double r0 = sqrt(-2.0 * log(1.0 - haste_unit(u[0]))), a0 = twoPi * haste_unit(u[1]);
            double r1 = sqrt(-2.0 * log(1.0 - haste_unit(u[2]))), a1 = twoPi * haste_unit(u[3]);
            float v[4] = {(float)(r0 * cos(a0)), (float)(r0 * sin(a0)), (float)(r1 * cos(a1)), (float)(r1 * sin(a1))};
            i64 i = b * 4;
            for (int l = 0; l < 4; ++l)
                if (i + l < count) dst[i + l] = v[l];
        }
    }
    """#)

    private func fillRandom(_ kernel: String, _ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) {
        requireFloat32(dst, "random fill")
        if offset % 4 != 0 { CUDABackend.fail("internal: random: offset \(offset) is not block-aligned") }
        if count <= 0 { return }
        launch(CUDABackend.randomSource, kernel, grid: Dim3(CUDABackend.blocks((count + 3) / 4)), block: Dim3(256),
               [.pointer(address(dst)), .int64(Int64(count)), .uint64(seed), .uint64(offset / 4)])
    }

    public func fillUniform(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) {
        fillRandom("fill_uniform_f32", dst, count: count, seed: seed, offset: offset)
    }

    public func fillNormal(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) {
        fillRandom("fill_normal_f32", dst, count: count, seed: seed, offset: offset)
    }
}
