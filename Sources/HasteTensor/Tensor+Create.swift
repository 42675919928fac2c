/// Host scalar types that map one-to-one onto a `DType`.
public protocol HostScalar { static var dtype: DType { get } }
extension Float: HostScalar { public static var dtype: DType { .float32 } }
extension Double: HostScalar { public static var dtype: DType { .float64 } }
extension Int32: HostScalar { public static var dtype: DType { .int32 } }
extension Int64: HostScalar { public static var dtype: DType { .int64 } }
extension Int: HostScalar { public static var dtype: DType { .int64 } }
extension UInt8: HostScalar { public static var dtype: DType { .uint8 } }
extension Bool: HostScalar { public static var dtype: DType { .bool } }

extension Tensor {
    /// Uninitialised contiguous tensor.
    public static func empty(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        require(shape.allSatisfy { $0 >= 0 }, "empty: negative dimension in \(shape)")
        let n = shape.reduce(1, *)
        return Tensor(storage: Storage(byteCount: n * dtype.byteSize, device: device), shape: shape, dtype: dtype)
    }

    public static func empty(like t: Tensor) -> Tensor { empty(t.shape, dtype: t.dtype, device: t.device) }

    public static func full(_ shape: [Int], _ value: Double, dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        let t = empty(shape, dtype: dtype, device: device)
        t.backend.fill(t.buffer, count: t.count, value: value)
        return t
    }

    public static func zeros(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        full(shape, 0, dtype: dtype, device: device)
    }

    public static func ones(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        full(shape, 1, dtype: dtype, device: device)
    }

    public static func zeros(like t: Tensor) -> Tensor { zeros(t.shape, dtype: t.dtype, device: t.device) }
    public static func ones(like t: Tensor) -> Tensor { ones(t.shape, dtype: t.dtype, device: t.device) }

    /// A 0-d tensor.
    public static func scalar(_ value: Double, dtype: DType = .float32, device: Device = .cpu) -> Tensor {
        full([], value, dtype: dtype, device: device)
    }

    /// Copies host values into a new tensor of the matching dtype.
    public convenience init<T: HostScalar>(_ values: [T], shape: [Int]? = nil, device: Device = .cpu) {
        let shape = shape ?? [values.count]
        require(shape.reduce(1, *) == values.count,
                     "Tensor(values:shape:): \(values.count) values do not fill shape \(shape)")
        let dtype = T.dtype
        let storage = Storage(byteCount: values.count * dtype.byteSize, device: device)
        self.init(storage: storage, shape: shape, dtype: dtype)
        values.withUnsafeBytes { raw in
            if let base = raw.baseAddress {
                backend.copyFromHost(base, to: buffer, byteCount: values.count * dtype.byteSize)
            }
        }
    }

    /// Host copy of the elements in row-major order, converted to `T`.
    public func scalars<T: HostScalar>(as _: T.Type) -> [T] {
        let src = to(T.dtype).contiguous()
        let n = count
        return [T](unsafeUninitializedCapacity: n) { dst, initialised in
            if n > 0 { src.backend.copyToHost(src.buffer, UnsafeMutableRawPointer(dst.baseAddress!), byteCount: n * T.dtype.byteSize) }
            initialised = n
        }
    }

    /// The single element of a one-element tensor, as Double.
    public func item() -> Double {
        require(count == 1, "item: tensor of shape \(shape) has \(count) elements, expected 1")
        return scalars(as: Double.self)[0]
    }

    /// Converts to another dtype (a copy; returns self when already that dtype). Differentiable between
    /// float32 and float64, and from bfloat16/float16 to either (a tracked autocast output widened, as torch's
    /// `.float()`: the gradient is rounded back to the low dtype).
    public func to(_ dtype: DType) -> Tensor {
        if dtype == self.dtype { return self }
        let x = contiguous()
        let y = Tensor.empty(shape, dtype: dtype, device: device)
        backend.cast(from: x.buffer, to: y.buffer, count: count)
        if dtype.isComputeFloat && (self.dtype.isComputeFloat || self.dtype.isLowFloat) { return y.recorded(CastBackward(x: x)) }
        return y
    }

    /// Copies to another device (through the host).
    public func to(_ device: Device) -> Tensor {
        if device == self.device { return self }
        let x = contiguous()
        let y = Tensor.empty(shape, dtype: dtype, device: device)
        let bytes = count * dtype.byteSize
        let host = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(bytes, 1), alignment: 64)
        defer { host.deallocate() }
        x.backend.copyToHost(x.buffer, host, byteCount: bytes)
        y.backend.copyFromHost(UnsafeRawPointer(host), to: y.buffer, byteCount: bytes)
        return y
    }

    /// A copy that owns its storage and shares nothing (no autograd).
    public func clone() -> Tensor {
        let x = contiguous()
        let y = Tensor.empty(like: x)
        backend.copy(from: x.buffer, to: y.buffer, byteCount: count * dtype.byteSize)
        return y
    }

    /// Same values, cut from the graph: no gradient flows back.
    public func detached() -> Tensor {
        Tensor(storage: storage, shape: shape, strides: strides, offset: offset, dtype: dtype)
    }

    /// Writes `source`'s values into this tensor's (contiguous) storage, in place, outside autograd.
    /// Used by loaders and the optimizer; shapes must match.
    public func copyValues(from source: Tensor) {
        require(source.shape == shape, "copyValues: source \(source.shape) vs destination \(shape)")
        let src = source.to(dtype).to(device).contiguous()
        backend.copy(from: src.buffer, to: buffer, byteCount: count * dtype.byteSize)
    }
}

/// float32 ↔ float64 (or bf16/fp16 → float32/64) conversion passes the gradient back in the input's dtype.
struct CastBackward: Backward {
    let x: Tensor
    var inputs: [Tensor] { [x] }
    func gradients(_ dy: Tensor) -> [Tensor?] { [dy.to(x.dtype)] }
}
