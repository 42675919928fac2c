import RealModule

/// Philox4x32-10 (Salmon et al. 2011), the generator behind cuRAND's and torch's CUDA streams.
@inline(__always)
func philox(_ counter: UInt64, _ key: UInt64) -> (UInt32, UInt32, UInt32, UInt32) {
    var c0 = UInt32(truncatingIfNeeded: counter), c1 = UInt32(truncatingIfNeeded: counter >> 32)
    var c2: UInt32 = 0, c3: UInt32 = 0
    var k0 = UInt32(truncatingIfNeeded: key), k1 = UInt32(truncatingIfNeeded: key >> 32)
    for _ in 0..<10 {
        let p0 = UInt64(0xD251_1F53) &* UInt64(c0), p1 = UInt64(0xCD9E_8D57) &* UInt64(c2)
        let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
        let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
        k0 = k0 &+ 0x9E37_79B9
        k1 = k1 &+ 0xBB67_AE85
    }
    return (c0, c1, c2, c3)
}

/// [0,1) from 24 bits (exactly representable in Float).
@inline(__always) func unit(_ u: UInt32) -> Double { Double(u >> 8) * 0x1p-24 }

extension CPUBackend {
    public func fillUniform(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) {
        fillBlocks(dst, count: count, seed: seed, offset: offset) { u in (unit(u.0), unit(u.1), unit(u.2), unit(u.3)) }
    }

    public func fillNormal(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) {
        fillBlocks(dst, count: count, seed: seed, offset: offset) { u in
            // u1 in (0, 1] so the log is finite.
            let r0 = (-2 * Double.log(1 - unit(u.0))).squareRoot(), a0 = 2 * Double.pi * unit(u.1)
            let r1 = (-2 * Double.log(1 - unit(u.2))).squareRoot(), a1 = 2 * Double.pi * unit(u.3)
            return (r0 * .cos(a0), r0 * .sin(a0), r1 * .cos(a1), r1 * .sin(a1))
        }
    }

    private func fillBlocks(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64,
                            _ transform: ((UInt32, UInt32, UInt32, UInt32)) -> (Double, Double, Double, Double)) {
        require(offset % 4 == 0, "random: offset \(offset) is not block-aligned")
        switch dst.dtype {
        case .float32: fill(dst.pointer(Float.self), count, seed, offset, transform)
        case .float64: fill(dst.pointer(Double.self), count, seed, offset, transform)
        default: fatalError("random: unsupported dtype \(dst.dtype)")
        }
    }

    private func fill<T: BinaryFloatingPoint>(_ p: UnsafeMutablePointer<T>, _ count: Int, _ seed: UInt64, _ offset: UInt64,
                                              _ transform: ((UInt32, UInt32, UInt32, UInt32)) -> (Double, Double, Double, Double)) {
        let blocks = (count + 3) / 4, base = offset / 4
        let out = SendablePointer(p)
        Parallel.chunks(blocks, chunk: 4096) { r in
            for b in r {
                let v = transform(philox(base + UInt64(b), seed))
                let i = b * 4
                out.base[i] = T(v.0)
                if i + 1 < count { out.base[i + 1] = T(v.1) }
                if i + 2 < count { out.base[i + 2] = T(v.2) }
                if i + 3 < count { out.base[i + 3] = T(v.3) }
            }
        }
    }
}
