import HasteTensor

/// One storage of a torch file: `count` elements of `dtype` in a zip entry (`archive/data/<key>`) or in a span
/// of a legacy file. Its bytes are copied once into a `Storage` on first use; every tensor viewing the storage
/// shares that copy while any of them is alive (torch's shared storages, e.g. tied or sliced weights).
public final class TorchStorage {
    public let key: String
    public let dtype: DType
    public let count: Int
    /// The storage type as the pickle names it ("torch.FloatStorage").
    public let typeName: String
    /// Where the bytes are; set when the file is opened (legacy files list their storages after the pickle).
    var span: FileSpan?
    private weak var loaded: Storage?

    init(key: String, dtype: DType, count: Int, typeName: String, span: FileSpan?) {
        self.key = key
        self.dtype = dtype
        self.count = count
        self.typeName = typeName
        self.span = span
    }

    /// Zip entry name or legacy-file location of the bytes (for messages).
    public var location: String { span?.name ?? "storage '\(key)'" }

    /// Storage types a `torch.save` pickle names → element type.
    static let dtypes: [String: DType] = [
        "FloatStorage": .float32, "DoubleStorage": .float64, "HalfStorage": .float16, "BFloat16Storage": .bfloat16,
        "LongStorage": .int64, "IntStorage": .int32, "ByteStorage": .uint8, "BoolStorage": .bool, "UntypedStorage": .uint8,
    ]

    /// The host copy of the storage (read once, then shared).
    func load() throws -> Storage {
        if let s = loaded { return s }
        guard let span else { throw HasteError.unsupported("storage '\(key)' has no data in the file") }
        let s = Storage(byteCount: span.size, device: .cpu)   // count × element size, checked when the span was made
        try span.read(into: s.address, verify: false)
        if dtype == .bool { normalizeBools(s.address, count: count) }
        span.dropPages()
        loaded = s
        return s
    }
}

/// A tensor of a torch file as `_rebuild_tensor_v2` describes it: a strided view (size, stride, storage offset,
/// in elements) of a storage. Nothing is read until `load()`.
public final class TorchTensor: CustomStringConvertible {
    public let storage: TorchStorage
    public let storageOffset: Int
    public let shape: [Int]
    public let strides: [Int]

    init(storage: TorchStorage, offset: Int, shape: [Int], strides: [Int]) {
        self.storage = storage
        self.storageOffset = offset
        self.shape = shape
        self.strides = strides
    }

    public var dtype: DType { storage.dtype }
    /// Elements of the tensor (saturating, for damaged shapes that `problem` rejects).
    public var count: Int { CheckedSize.product(shape) ?? Int.max }
    /// Bytes of the tensor's own elements (what safetensors would store for it; saturating like `count`).
    public var byteCount: Int { CheckedSize.product(count, dtype.byteSize) ?? Int.max }

    /// Bytes that views larger than their storage may take, together per file, before loading refuses them (unless
    /// the caller raises the limit): a broadcast or overlapping view (stride 0, `expand`) of a few bytes would
    /// otherwise become gigabytes once copied out (`haste convert`, a model load), and a file may hold many.
    /// Views no larger than their storage are always read.
    public static let expandingViewLimit = 16 << 20

    /// Why this view cannot be read (negative or overflowing sizes, strides or offset; elements past the end
    /// of the storage), or nil when it can.
    var problem: String? {
        let described = "size \(shape), stride \(strides), offset \(storageOffset)"
        guard shape.count == strides.count else { return "\(described): size and stride differ in length" }
        guard shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }), storageOffset >= 0 else {
            return "\(described): negative size, stride or offset"
        }
        // Also refuses more than CheckedSize.maxRank dimensions; past it the element count cannot overflow.
        guard CheckedSize.byteCount(shape, dtype) != nil else { return "\(described): the sizes multiply past 64 bits (a damaged file)" }
        let total = CheckedSize.product(shape)!
        var last = storageOffset
        for (n, s) in zip(shape, strides) {
            let (reach, o1) = (max(n, 1) - 1).multipliedReportingOverflow(by: s)
            let (l, o2) = last.addingReportingOverflow(reach)
            if o1 || o2 { return "\(described): sizes overflow" }
            last = l
        }
        if total == 0 { return nil }
        // Broadcast (stride 0) or overlapping views may hold more elements than their storage, but not absurdly
        // more: copying one out would exhaust memory.
        if total > max(storage.count, 1 << 32) {
            return "\(described): \(total) elements over a storage of \(storage.count) is not a plausible view"
        }
        if last >= storage.count {
            return "\(described) reaches element \(last) of \(storage.location), which holds \(storage.count) \(dtype) elements"
        }
        return nil
    }

    /// Bytes copying this view out produces beyond its storage: its byte count when it holds more bytes than its
    /// storage (a broadcast or overlapping view, e.g. stride 0), else 0.
    var expandedByteCount: Int {
        byteCount > (CheckedSize.product(storage.count, dtype.byteSize) ?? Int.max) ? byteCount : 0
    }

    /// Why copying this view out would exceed `limit` bytes of expansion, of which earlier views of the same file
    /// already took `used`; nil when it does not.
    func expansionProblem(limit: Int, used: Int = 0) -> String? {
        guard expandedByteCount > limit - used else { return nil }
        let earlier = used > 0 ? ", of which earlier views of the file take \(InspectReport.humanBytes(used))" : ""
        return "size \(shape), stride \(strides) views \(storage.count) \(dtype) elements of \(storage.location); copied out it "
            + "would take \(InspectReport.humanBytes(byteCount)), past the \(InspectReport.humanBytes(limit)) haste allows broadcast "
            + "or overlapping views to expand to\(earlier) (haste convert --allow-expanding-views writes them anyway)"
    }

    /// The tensor on the CPU, in its stored dtype and layout (a view of its storage's single copy). A view larger
    /// than its storage and than `expandingViewLimit` bytes is refused (see `TorchTensor.expandingViewLimit`).
    public func load(expandingViewLimit: Int = TorchTensor.expandingViewLimit) throws -> Tensor {
        try load(expandingViewLimit: expandingViewLimit, used: 0)
    }

    /// `load`, with `used` bytes of the expansion budget already taken by other views of the file.
    func load(expandingViewLimit: Int, used: Int) throws -> Tensor {
        if let problem = problem ?? expansionProblem(limit: expandingViewLimit, used: used) { throw HasteError.unsupported(problem) }
        let s = try storage.load()
        return Tensor(storage: s, shape: shape, strides: strides, offset: storageOffset, dtype: dtype)
    }

    public var description: String { "tensor(\(dtype), \(shape))" }
}
