/// An n-dimensional array with eager autograd (STYLE §0, §2.3). Metadata is immutable; views share storage.
/// Only kernels (into their outputs) and the optimizer (into the parameter arena) write into storage.
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    /// Element strides, one per axis.
    public let strides: [Int]
    /// Element offset into `storage`; re-pointed with `storage` when a `ParameterStore` moves a parameter
    /// into its arena (the only writer).
    public package(set) var offset: Int
    public let dtype: DType
    /// The storage; re-pointed only when a `ParameterStore` moves a parameter into its arena.
    public package(set) var storage: Storage

    /// Leaf flag: gradients are accumulated into `grad` by `backward()`.
    public var requiresGrad: Bool = false
    /// The node that made this tensor (nil for leaves and for results computed without grad).
    package var gradFn: (any Backward)?
    /// Accumulated gradient of a leaf. A preset `grad` (a parameter's arena slot) is accumulated into in place.
    /// A slot a store's `zeroGrad` left stale is logically zero: reading `grad` fills it with zeros first.
    public var grad: Tensor? {
        get {
            if gradIsStale { clearStaleGrad() }
            return gradValue
        }
        set { gradValue = newValue; gradIsStale = false }
    }
    /// `grad` as stored, stale or not (the backward walk and the store's own passes).
    package private(set) var gradValue: Tensor?
    /// Set when `grad` is an arena slot owned by a parameter store: accumulate into it in place.
    package var gradIsOwnedSlot = false
    /// Set by `ParameterStore.zeroGrad` on an owned slot instead of filling it: the slot's memory still holds the
    /// last step's values but means zero. The walk's first accumulation overwrites it (0 + g is g: no fill, no
    /// add); whoever reads it before then fills it (`grad`, the store's arena accessors).
    package var gradIsStale = false
    /// A gradient sum only the backward walk holds (NarrowBackward made it): a later term may be added into it in
    /// place. The walk clears it when it hands the tensor to a node, a leaf's `grad` or a caller.
    package var isPrivateGradientSum = false

    /// Fills a stale gradient slot with zeros.
    package func clearStaleGrad() {
        gradIsStale = false
        guard let g = gradValue else { return }
        g.backend.fill(g.buffer, count: g.count, value: 0)
    }

    public init(storage: Storage, shape: [Int], strides: [Int]? = nil, offset: Int = 0, dtype: DType) {
        self.storage = storage
        self.shape = shape
        self.strides = strides ?? Tensor.contiguousStrides(shape)
        self.offset = offset
        self.dtype = dtype
    }

    public var rank: Int { shape.count }
    public var count: Int { shape.reduce(1, *) }
    public var device: Device { storage.device }
    public var backend: any Backend { storage.backend }
    /// Whether autograd tracks this tensor (a leaf that requires grad, or the result of a tracked op).
    public var isTracked: Bool { requiresGrad || gradFn != nil }

    /// The contiguous buffer a kernel reads. Callers make the tensor contiguous first.
    public var buffer: Buffer {
        require(isContiguous, "buffer: tensor \(shape) with strides \(strides) is not contiguous")
        return Buffer(storage: storage, offset: offset, dtype: dtype)
    }

    public var isContiguous: Bool {
        var expected = 1
        for axis in stride(from: rank - 1, through: 0, by: -1) where shape[axis] != 1 {
            if strides[axis] != expected { return false }
            expected *= shape[axis]
        }
        return true
    }

    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = s
            s *= shape[axis]
        }
        return strides
    }

    /// Normalises a possibly negative axis; traps naming `op` when out of range.
    public func axis(_ a: Int, _ op: String) -> Int {
        let r = a < 0 ? a + rank : a
        require(r >= 0 && r < rank, "\(op): axis \(a) out of range for shape \(shape)")
        return r
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let values = count <= 16 && dtype != .float16 && dtype != .bfloat16 ? " \(scalars(as: Double.self))" : ""
        return "Tensor(\(dtype), \(shape), \(device))\(values)"
    }
}
