#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Foundation
import HasteCUDA

/// One kernel entry point in a compiled family: its launch trampoline and C parameter list.
final class EmulatedKernel {
    typealias Trampoline = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Void
    typealias Run = @convention(c) (Trampoline?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafePointer<CChar>?,
                                    UnsafePointer<UInt32>?, UnsafePointer<UInt32>?, UnsafeMutablePointer<CChar>?, Int, Int32,
                                    UnsafePointer<UInt64>?, Int32, UnsafeMutablePointer<CChar>?, Int,
                                    UnsafeMutablePointer<UInt64>?) -> Int32

    /// A C parameter as the runtime's `haste_emu::signature` describes it.
    enum Parameter: Equatable, CustomStringConvertible {
        case pointer(alignment: Int), int32, uint32, int64, uint64, float, double, other

        init(code: Substring) {
            switch code {
            case "i": self = .int32
            case "j": self = .uint32
            case "l": self = .int64
            case "u": self = .uint64
            case "f": self = .float
            case "d": self = .double
            default:
                if code.hasPrefix("p"), let a = Int(code.dropFirst()) { self = .pointer(alignment: a) } else { self = .other }
            }
        }

        var description: String {
            switch self {
            case let .pointer(a): return "a pointer to \(a)-byte elements"
            case .int32: return "int"
            case .uint32: return "unsigned"
            case .int64: return "long long"
            case .uint64: return "unsigned long long"
            case .float: return "float"
            case .double: return "double"
            case .other: return "a type KernelArgument cannot pass"
            }
        }
    }

    let name: String
    let trampoline: Trampoline
    let run: Run
    let parameters: [Parameter]
    var signature: String { "\(name)(" + parameters.map(\.description).joined(separator: ", ") + ")" }

    init(name: String, trampoline: Trampoline, run: @escaping Run, signature: String) {
        self.name = name; self.trampoline = trampoline; self.run = run
        self.parameters = signature.isEmpty ? [] : signature.split(separator: ",").map(Parameter.init(code:))
    }
}

/// A compiled and loaded family (never unloaded).
final class EmulatorModule {
    typealias Gemm = @convention(c) (Int32, Int32, Int, Int, Int, Float, Float, UnsafePointer<Float>?, Int, Int,
                                     UnsafePointer<Float>?, Int, Int, UnsafeMutablePointer<Float>?, Int, Int, Int) -> Void
    let kernels: [String: EmulatedKernel]
    let gemm: Gemm
    init(kernels: [String: EmulatedKernel], gemm: @escaping Gemm) { self.kernels = kernels; self.gemm = gemm }
}

/// Compiles kernel families for the emulator: runtime header + prelude + code + trampolines → a shared library
/// (clang++ -O1), cached in the process by the text's hash and on disk in the temporary directory, so the suite
/// compiles each family once.
enum EmulatorCompiler {
    /// Line tables for the source line of a fault; traps for undefined behaviour a GPU would not report either
    /// (an index outside a fixed-size local array, signed overflow, a float → int conversion out of range, a
    /// misaligned access, a shift too far). HASTE_EMULATOR_FLAGS adds flags (e.g. "-O0 -g" to debug a kernel).
    static let flags = ["-std=c++17", "-O1", "-shared", "-fPIC", "-DHASTE_EMULATOR", "-fvisibility=hidden",
                        "-fno-exceptions", "-fno-rtti", "-fstack-clash-protection", "-gline-tables-only",
                        "-fsanitize=bounds,alignment,signed-integer-overflow,shift,integer-divide-by-zero,vla-bound,"
                            + "return,unreachable,bool,float-cast-overflow",
                        "-fsanitize-trap=all", "-w"]
        + (ProcessInfo.processInfo.environment["HASTE_EMULATOR_FLAGS"] ?? "").split(separator: " ").map(String.init)
    /// Loaded modules by key, and the keys being compiled now (different families compile in parallel, one
    /// family once).
    private static let condition = NSCondition()
    nonisolated(unsafe) private static var modules: [String: EmulatorModule] = [:]
    nonisolated(unsafe) private static var compiling: Set<String> = []

    /// The family, compiled and loaded on first use.
    static func module(for source: KernelSource, extraFlags: [String] = []) throws -> EmulatorModule {
        try checkEntryPoints(source)
        var text = EmulatorRuntime.header
        text += "\n#line 1 \"KernelSource.prelude\"\n" + KernelSource.prelude
        text += "\n#line 1 \"\(source.family) kernels\"\n" + source.code
        text += "\n#line 1 \"emulator trampolines\"\n"
        for name in source.kernels {
            text += "HASTE_EMU_API void haste_emu_launch__\(name)(void** a) { haste_emu::call(\(name), a); }\n"
            text += "HASTE_EMU_API const char* haste_emu_signature__\(name)(void) { return haste_emu::signature(\(name)); }\n"
        }
        return try module(text: text, family: source.family, kernels: source.kernels, extraFlags: extraFlags)
    }

    /// The runtime alone (for `haste_emu_gemm`).
    static func runtimeModule(extraFlags: [String] = []) throws -> EmulatorModule {
        try module(text: EmulatorRuntime.header, family: "emulator runtime", kernels: [], extraFlags: extraFlags)
    }

    /// Every `__global__` line must be `extern "C" __global__ void name(` and the names must be `kernels`.
    static func checkEntryPoints(_ source: KernelSource) throws {
        var declared: [String] = [], continued = false
        for line in source.code.split(separator: "\n", omittingEmptySubsequences: true) {
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            // Prelude's HASTE_FLASH_ENTRIES(NAME, SMEM, FWD, DQ, DKDV, W): NAME_forward_dW, NAME_backward_dq_dW, NAME_backward_dkdv_dW.
            if trimmed.hasPrefix("HASTE_FLASH_ENTRIES(") {
                let args = trimmed.dropFirst("HASTE_FLASH_ENTRIES(".count).prefix(while: { $0 != ")" })
                    .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                guard args.count == 6 else { throw EmulatorError(message: "\(source.family) kernels: HASTE_FLASH_ENTRIES takes 6 arguments: \(trimmed)") }
                declared += ["_forward_d", "_backward_dq_d", "_backward_dkdv_d"].map { args[0] + $0 + args[5] }
                continue
            }
            // CUDASoftCrossEntropy.swift's HASTE_SCE_ENTRIES(SUFFIX, BODY): soft_cross_entropy_f32{,_t16,_x16,_x16_t16}SUFFIX.
            if trimmed.hasPrefix("HASTE_SCE_ENTRIES(") {
                let args = trimmed.dropFirst("HASTE_SCE_ENTRIES(".count).prefix(while: { $0 != ")" })
                    .split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
                guard args.count == 2 else { throw EmulatorError(message: "\(source.family) kernels: HASTE_SCE_ENTRIES takes 2 arguments: \(trimmed)") }
                declared += ["", "_t16", "_x16", "_x16_t16"].map { "soft_cross_entropy_f32" + $0 + args[0] }
                continue
            }
            // A macro's definition (`#define` and the lines a backslash continues) declares nothing until it is used.
            let inMacro = continued || trimmed.hasPrefix("#define")
            continued = inMacro && trimmed.hasSuffix("\\")
            if inMacro { continue }
            guard line.contains("__global__") else { continue }
            if trimmed.hasPrefix("//") || trimmed.hasPrefix("/*") || trimmed.hasPrefix("*") { continue }
            let words = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 4, words[0] == "extern", words[1] == "\"C\"", words[2] == "__global__", words[3] == "void",
                  let void = trimmed.range(of: "void") else {
                throw EmulatorError(message: "\(source.family) kernels: an entry point must be declared `extern \"C\" __global__ void name(...)` "
                                    + "on one line, found: \(trimmed)")
            }
            var rest = trimmed[void.upperBound...].drop(while: { $0 == " " || $0 == "\t" })
            if rest.hasPrefix("__launch_bounds__"), let close = rest.firstIndex(of: ")") {
                rest = rest[rest.index(after: close)...].drop(while: { $0 == " " || $0 == "\t" })
            }
            let name = rest.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" })
            declared.append(String(name))
        }
        let listed = Set(source.kernels), found = Set(declared)
        if listed != found || declared.count != found.count {
            throw EmulatorError(message: "\(source.family) kernels: `kernels` lists \(source.kernels.sorted()) but the code declares "
                                + "\(declared.sorted()) as `extern \"C\" __global__ void`: they must be the same names, each once")
        }
    }

    private static func module(text: String, family: String, kernels: [String], extraFlags: [String]) throws -> EmulatorModule {
        let compiler = try compilerPath()
        let key = hash(([compiler] + flags + extraFlags + [text]).joined(separator: "\u{0}"))
        condition.lock()
        while compiling.contains(key) { condition.wait() }
        if let m = modules[key] { condition.unlock(); return m }
        compiling.insert(key)
        condition.unlock()
        var loaded: EmulatorModule?
        defer {
            condition.lock()
            compiling.remove(key)
            if let m = loaded { modules[key] = m }
            condition.broadcast()
            condition.unlock()
        }
        loaded = try load(text: text, family: family, kernels: kernels, key: key, compiler: compiler, flags: flags + extraFlags)
        return loaded!
    }

    private static func load(text: String, family: String, kernels: [String], key: String, compiler: String,
                             flags: [String]) throws -> EmulatorModule {
        let library = try compile(text: text, family: family, key: key, compiler: compiler, flags: flags)
        guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
            throw EmulatorError(message: "\(family): dlopen(\(library)) failed: \(String(cString: dlerror()))")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let s = dlsym(handle, name) else {
                throw EmulatorError(message: "\(family): symbol \(name) missing from \(library)")
            }
            return s
        }
        let run = unsafeBitCast(try symbol("haste_emu_run"), to: EmulatedKernel.Run.self)
        let gemm = unsafeBitCast(try symbol("haste_emu_gemm"), to: EmulatorModule.Gemm.self)
        typealias Signature = @convention(c) () -> UnsafePointer<CChar>?
        var table: [String: EmulatedKernel] = [:]
        for name in kernels {
            let trampoline = unsafeBitCast(try symbol("haste_emu_launch__" + name), to: EmulatedKernel.Trampoline.self)
            let signature = unsafeBitCast(try symbol("haste_emu_signature__" + name), to: Signature.self)
            table[name] = EmulatedKernel(name: name, trampoline: trampoline, run: run,
                                         signature: signature().map { String(cString: $0) } ?? "")
        }
        return EmulatorModule(kernels: table, gemm: gemm)
    }

    /// The compiled library for `text`: from the disk cache, or compiled now (written under a temporary name and
    /// renamed, so concurrent test processes never load a half-written file).
    private static func compile(text: String, family: String, key: String, compiler: String, flags: [String]) throws -> String {
        let fm = FileManager.default
        let directory = ProcessInfo.processInfo.environment["HASTE_EMULATOR_CACHE"]
            ?? (NSTemporaryDirectory() as NSString).appendingPathComponent("haste-emulator-\(getuid())")
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let library = (directory as NSString).appendingPathComponent("\(key).so")
        if fm.fileExists(atPath: library) {
            try? fm.setAttributes([.modificationDate: Date()], ofItemAtPath: library)   // in use: not pruned
            return library
        }
        pruneCache(directory)
        let unique = "\(key)-\(getpid())-\(UInt64.random(in: 0 ... .max))"
        let sourcePath = (directory as NSString).appendingPathComponent("\(unique).cpp")
        let temporary = (directory as NSString).appendingPathComponent("\(unique).so.tmp")
        try text.write(toFile: sourcePath, atomically: false, encoding: .utf8)
        defer { try? fm.removeItem(atPath: sourcePath); try? fm.removeItem(atPath: temporary) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: compiler)
        process.arguments = flags + ["-o", temporary, sourcePath]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw EmulatorError(message: "\(family): \(compiler) failed (status \(process.terminationStatus)):\n\(output)")
        }
        guard rename(temporary, library) == 0 else {
            throw EmulatorError(message: "\(family): cannot move the compiled library to \(library): \(String(cString: strerror(errno)))")
        }
        return library
    }

    /// Removes compiled libraries (and leftovers of interrupted compiles) untouched for a week: every edit of a
    /// kernel family leaves one behind.
    private static func pruneCache(_ directory: String) {
        let fm = FileManager.default
        let weekAgo = Date().addingTimeInterval(-7 * 24 * 3600)
        for name in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] {
            let path = (directory as NSString).appendingPathComponent(name)
            if let modified = (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date, modified < weekAgo {
                try? fm.removeItem(atPath: path)
            }
        }
    }

    /// clang++ (or the compiler named by HASTE_EMULATOR_CXX): on PATH, beside the Swift toolchain, or the system's.
    static func compilerPath() throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let c = env["HASTE_EMULATOR_CXX"], !c.isEmpty { return c }
        var candidates = (env["PATH"] ?? "").split(separator: ":").map { "\($0)/clang++" }
        candidates += ["/opt/swift/usr/bin/clang++", "/usr/bin/clang++", "/usr/local/bin/clang++"]
        if let c = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return c }
        throw EmulatorError(message: "no clang++ found for the CUDA emulator (looked on PATH, /opt/swift/usr/bin, /usr/bin); "
                            + "set HASTE_EMULATOR_CXX to a C++17 compiler")
    }

    /// "file:line (function)" for an instruction at `offset` in a compiled family (through llvm-symbolizer beside
    /// the compiler or on PATH); nil when it cannot be said.
    static func symbolize(object: String, offset: UInt64) -> String? {
        let directory = ((try? compilerPath()) ?? "") as NSString
        let candidates = [directory.deletingLastPathComponent + "/llvm-symbolizer"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/llvm-symbolizer" }
        guard let symbolizer = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return "\(object) + 0x\(String(offset, radix: 16))"
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: symbolizer)
        process.arguments = ["--obj=\(object)", "--inlining", "0x" + String(offset, radix: 16)]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // Pairs of lines (function, file:line:column), innermost inlined frame first. clang names the check behind a
        // sanitizer trap in a pseudo-frame; the trampolines' frames (the generated .cpp) say nothing useful.
        let lines = output.split(separator: "\n").map(String.init)
        var frames: [String] = [], check: String?
        var i = 0
        while i + 1 < lines.count {
            let function = lines[i], place = (lines[i + 1] as NSString).lastPathComponent
            i += 2
            if function.hasPrefix("__clang_trap_msg$") { check = function.split(separator: "$").last.map(String.init); continue }
            if place.hasPrefix("??") || place.contains(".cpp:") || place.hasPrefix("emulator trampolines") { continue }
            frames.append("\(place) (\(function))")
        }
        if frames.isEmpty { return nil }
        return frames.prefix(3).joined(separator: ", inlined in ") + (check.map { " [\($0)]" } ?? "")
    }

    /// 128-bit FNV-1a (two 64-bit lanes), stable across processes unlike `Hasher`.
    static func hash(_ text: String) -> String {
        var a: UInt64 = 0xcbf2_9ce4_8422_2325, b: UInt64 = 0x6c62_272e_07bb_0142
        for byte in text.utf8 {
            a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
            b = (b ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 ^ (b >> 29)
        }
        return String(a, radix: 16) + String(b, radix: 16)
    }
}
