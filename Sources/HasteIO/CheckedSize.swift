import HasteTensor

/// Overflow-checked arithmetic on the sizes a file declares (shapes, element and byte counts, offsets and
/// lengths). Every reader goes through these: a damaged or hostile header must become a thrown error naming the
/// file, never an arithmetic trap. A nil result means "does not fit in Int" (or a negative operand where
/// sizes cannot be negative).
enum CheckedSize {
    /// a × b, nil on overflow.
    static func product(_ a: Int, _ b: Int) -> Int? {
        let (r, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : r
    }

    /// a + b, nil on overflow.
    static func sum(_ a: Int, _ b: Int) -> Int? {
        let (r, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : r
    }

    /// The product of non-negative `factors`; nil when one is negative or the product overflows.
    static func product(_ factors: [Int]) -> Int? {
        var n = 1
        for f in factors {
            guard f >= 0, let r = product(n, f) else { return nil }
            n = r
        }
        return n
    }

    /// Bytes of a C-order array of `shape` and `dtype`, or nil when a dimension is negative or the array is too
    /// big to address. As numpy's "array is too big" rule, zero dimensions do not hide the others: the product
    /// of the non-zero dimensions times the element size must fit too, since contiguous strides (and any
    /// later reshape) multiply them even when the array holds no element ([0, 2^62, 2^62] is refused).
    static func byteCount(_ shape: [Int], _ dtype: DType) -> Int? {
        guard shape.allSatisfy({ $0 >= 0 }), shape.count <= maxRank,
              product(shape.map { max($0, 1) } + [dtype.byteSize]) != nil else { return nil }
        return product(shape + [dtype.byteSize])
    }

    /// More dimensions than any tensor library uses is damage, not data (torch allows 64 too).
    static let maxRank = 64

    /// Whether `offset..<offset + length` lies inside `0..<size` (all in bytes; negative values never do).
    static func fits(offset: Int, length: Int, in size: Int) -> Bool {
        guard offset >= 0, length >= 0, let end = sum(offset, length) else { return false }
        return end <= size
    }
}
