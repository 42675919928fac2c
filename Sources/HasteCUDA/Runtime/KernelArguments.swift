/// `cuLaunchKernel`'s `void** kernelParams`: entry i points at the value of the kernel's i-th parameter, in
/// the parameter's own C type; the driver copies the values during the call, so the storage lives only for
/// `withParameters`. Each value gets its own 8-byte slot (8-byte aligned: no C parameter type haste uses is
/// larger or more aligned).
enum KernelArgumentPack {
    static let slot = 8

    /// Bytes of the C type each argument stands for.
    static func size(_ a: KernelArgument) -> Int {
        switch a {
        case .pointer, .int64, .uint64, .double: return 8
        case .int32, .float: return 4
        }
    }

    /// Calls `body` with the `void**` array for `arguments` (never nil: a kernel without parameters gets an empty array).
    static func withParameters<R>(_ arguments: [KernelArgument], _ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>) throws -> R) rethrows -> R {
        let values = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, arguments.count) * slot, alignment: slot)
        let pointers = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: Swift.max(1, arguments.count))
        defer { values.deallocate(); pointers.deallocate() }
        for (i, a) in arguments.enumerated() {
            let p = values + i * slot
            switch a {
            case .pointer(let v): p.storeBytes(of: v, as: UInt64.self)
            case .int32(let v): p.storeBytes(of: v, as: Int32.self)
            case .int64(let v): p.storeBytes(of: v, as: Int64.self)
            case .uint64(let v): p.storeBytes(of: v, as: UInt64.self)
            case .float(let v): p.storeBytes(of: v, as: Float.self)
            case .double(let v): p.storeBytes(of: v, as: Double.self)
            }
            pointers[i] = p
        }
        return try body(pointers)
    }
}
