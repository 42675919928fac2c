import HasteTensor

extension CUDABackend {
    public func maxPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry) { unimplemented() }
    public func avgPool2d(x: Buffer, y: Buffer, planes: Int, geometry: PoolGeometry, countIncludePad: Bool) { unimplemented() }
}
