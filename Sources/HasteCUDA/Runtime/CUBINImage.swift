/// What a CUBIN (an ELF64 file) defines: the names of its function symbols. Lets a compile without a GPU check
/// that every kernel a family lists exists under that name (`extern "C"`, spelled right), which otherwise only
/// `cuModuleGetFunction` on a GPU would find out.
public enum CUBINImage {
    /// Names of the defined function symbols (STT_FUNC, section index ≠ 0) of every symbol table; nil when
    /// `image` is not a well-formed little-endian ELF64 file.
    public static func functionNames(_ image: [UInt8]) -> Set<String>? {
        func u16(_ o: Int) -> Int? { o >= 0 && o + 2 <= image.count ? Int(image[o]) | Int(image[o + 1]) << 8 : nil }
        func u32(_ o: Int) -> Int? { guard let a = u16(o), let b = u16(o + 2) else { return nil }; return a | b << 16 }
        func u64(_ o: Int) -> Int? {
            guard let a = u32(o), let b = u32(o + 4), b < 1 << 31 else { return nil }
            return a | b << 32
        }
        guard image.count >= 64, image[0] == 0x7f, image[1] == 0x45, image[2] == 0x4c, image[3] == 0x46,
              image[4] == 2, image[5] == 1,                                       // ELFCLASS64, little-endian
              let shoff = u64(0x28), let shentsize = u16(0x3a), let shnum = u16(0x3c), shentsize >= 64 else { return nil }
        struct Section { let type: Int, offset: Int, size: Int, link: Int, entsize: Int }
        var sections: [Section] = []
        for i in 0..<shnum {
            let h = shoff + i * shentsize
            guard let type = u32(h + 4), let offset = u64(h + 0x18), let size = u64(h + 0x20), let link = u32(h + 0x28),
                  let entsize = u64(h + 0x38), offset + size <= image.count else { return nil }
            sections.append(Section(type: type, offset: offset, size: size, link: link, entsize: entsize))
        }
        var names = Set<String>()
        for s in sections where s.type == 2 {                                     // SHT_SYMTAB
            guard s.entsize >= 24, s.link < sections.count else { return nil }
            let strings = sections[s.link]
            for e in stride(from: s.offset, to: s.offset + s.size - 23, by: s.entsize) {
                guard let nameOffset = u32(e), let shndx = u16(e + 6) else { return nil }
                let info = image[e + 4]
                guard info & 0xf == 2, shndx != 0, nameOffset < strings.size else { continue }   // STT_FUNC, defined
                var end = strings.offset + nameOffset
                while end < strings.offset + strings.size && image[end] != 0 { end += 1 }
                names.insert(String(decoding: image[(strings.offset + nameOffset)..<end], as: UTF8.self))
            }
        }
        return names
    }
}
