import HasteTensor

/// `torch.save`'s format before torch 1.6 (still written with `_use_new_zipfile_serialization=False`): five
/// pickles in a row — magic number, protocol version 1001, system info, the object (storages as persistent ids
/// `('storage', type, key, location, count, view)`), the list of storage keys — then, in that key order, each
/// storage as an 8-byte little-endian element count followed by its raw bytes (torch `_legacy_save`).
enum LegacyTorchFile {
    /// 0x1950a86a20f9469cfc6c, the magic number, as the LONG1 bytes that follow `PROTO 2`.
    static let magic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    static func looksLegacy(_ b: UnsafeRawBufferPointer) -> Bool {
        b.count >= 14 && b[0] == 0x80 && b[1] == 0x02 && b[2] == 0x8A && b[3] == 0x0A && Array(b[4..<14]) == magic
    }

    /// The saved object and the name messages use for its pickle.
    static func read(_ file: MappedFile) throws -> (PickleValue, String) {
        let bytes = file.bytes, path = file.path
        func bad(_ detail: String) -> HasteError { .fileFormat(path: path, detail: "legacy torch file: \(detail)") }
        var position = 0
        var storages: [String: TorchStorage] = [:], order: [String] = []
        func next(_ name: String, _ resolve: @escaping Unpickler.StorageResolver = { _ in
            throw HasteError.fileFormat(path: path, detail: "legacy torch file: a storage outside the main pickle") }) throws -> PickleValue {
            var machine = Unpickler(bytes: bytes, path: path, entry: name, start: position, resolveStorage: resolve)
            let value = try machine.load()
            position = machine.position
            return value
        }
        guard case .bigInt(magic) = try next("magic number") else { throw bad("wrong magic number") }
        guard try next("protocol version").intValue == 1001 else { throw bad("protocol version is not 1001") }
        let info = try next("system info")
        if case .bool(false)? = info["little_endian"] { throw bad("big-endian tensors are not supported") }
        let root = try next("object") { pid in
            let (key, dtype, count, typeName) = try TorchCheckpoint.storageID(pid, path: path, entry: "object pickle")
            if let s = storages[key] {
                guard s.dtype == dtype && s.count == count else { throw bad("storage '\(key)' is declared twice with different types or sizes") }
                return s
            }
            let s = TorchStorage(key: key, dtype: dtype, count: count, typeName: typeName, span: nil)
            storages[key] = s
            order.append(key)
            return s
        }
        guard let keys = try next("storage keys").elements?.map(\.keyText) else { throw bad("the storage key list is not a list") }
        for key in keys {
            guard let s = storages[key] else { throw bad("storage '\(key)' is stored but no tensor uses it") }
            guard position <= bytes.count - 8 else { throw bad("storage '\(key)' is missing at byte \(position) (truncated file?)") }
            let count = bytes.u64(position)
            guard count == UInt64(s.count) else { throw bad("storage '\(key)' holds \(count) elements, the pickle declares \(s.count)") }
            guard let size = CheckedSize.product(s.count, s.dtype.byteSize),
                  CheckedSize.fits(offset: position + 8, length: size, in: bytes.count) else {
                throw bad("storage '\(key)' (\(s.count) \(s.dtype) elements at byte \(position + 8)) runs past the end of the \(bytes.count)-byte file (truncated or damaged?)")
            }
            s.span = FileSpan(file: file, name: "storage '\(key)' at byte \(position + 8)", offset: position + 8, storedSize: size,
                              size: size, method: 0, crc: nil)
            position += 8 + size
        }
        if let missing = order.first(where: { storages[$0]?.span == nil }) { throw bad("storage '\(missing)' has no data") }
        return (root, "object pickle")
    }
}
