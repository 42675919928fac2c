import HasteTensor

extension CUDABackend {
    public func im2col(x: Buffer, cols: Buffer, batch: Int, geometry: ConvGeometry) { unimplemented() }
    public func col2im(cols: Buffer, dx: Buffer, batch: Int, geometry: ConvGeometry) { unimplemented() }
}
