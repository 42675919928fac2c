import HasteTensor

extension CUDABackend {
    public func reduceSum(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) { unimplemented() }
    public func reduceMax(_ x: Buffer, _ y: Buffer, outer: Int, reduce: Int, inner: Int) { unimplemented() }
    public func reduceMaxBackward(_ x: Buffer, _ y: Buffer, _ dy: Buffer, _ dx: Buffer, outer: Int, reduce: Int, inner: Int) { unimplemented() }
}
