import HasteTensor

extension CUDABackend {
    public func fillUniform(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) { unimplemented() }
    public func fillNormal(_ dst: Buffer, count: Int, seed: UInt64, offset: UInt64) { unimplemented() }
}
