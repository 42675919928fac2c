import Testing
import Glibc
import HasteTensor
@testable import HasteNN

@Test func storeKeysFollowRegistrationOrder() throws {
    let store = ParameterStore()
    _ = TinyNet(store.root)
    #expect(store.keys == TinyNet.keys)
    let f = try Fixture("nn_adamw.safetensors")
    #expect(Set(f.tensors(under: "init.").keys) == Set(TinyNet.keys))
    #expect(store.parameters.map(\.name) == TinyNet.keys.filter { $0 != "pos" })
    #expect(store.buffers.map(\.name) == ["pos"])
    #expect(store.trainableCount == 7 * 5 + 7 + 3 * 7 + 3 + 4 * 3 + 2 * 3 + 2)

    let nested = ParameterStore()
    let block = nested.root["blocks"][3]
    block["attn"].parameter("weight", [2, 2], .zeros)
    _ = MLP(block["mlp"], inFeatures: 3, hidden: 5, outFeatures: 3, activation: .silu, names: ("0", "2"))
    _ = Linear(block["adaLN_modulation.1"], 3, 6)
    #expect(nested.keys == ["blocks.3.attn.weight", "blocks.3.mlp.0.weight", "blocks.3.mlp.0.bias",
                            "blocks.3.mlp.2.weight", "blocks.3.mlp.2.bias",
                            "blocks.3.adaLN_modulation.1.weight", "blocks.3.adaLN_modulation.1.bias"])
}

/// One arena: decayed, then non-decayed, then buffers; values survive the move; grads are arena slots.
@Test func finalizeLaysOutOneArena() {
    let store = ParameterStore(seed: 3)
    let net = TinyNet(store.root)
    let before = store.stateDict().map { ($0.0, $0.1.clone()) }
    store.finalize()
    let arena = net.fc1.weight.storage
    for ((key, t), (_, old)) in zip(store.stateDict(), before) {
        #expect(t.storage === arena, "\(key) is not in the arena")
        #expect(t.offset % ParameterStore.slotAlignment == 0, "\(key) slot not aligned")
        expectClose(t, old, atol: 0, rtol: 0, "\(key) value after finalize")
    }
    let decayedEnd = [net.fc1.weight, net.fc2.weight, net.head.weight, net.proj.weight].map { $0.offset + $0.count }.max()!
    #expect([net.fc1.bias!, net.fc2.bias!, net.proj.bias!].allSatisfy { $0.offset >= decayedEnd })
    #expect(net.pos.offset >= net.proj.bias!.offset + 2 && !net.pos.requiresGrad && net.pos.grad == nil)
    let gradArena = net.fc1.weight.grad!.storage
    for (key, p) in store.parameters {
        #expect(p.requiresGrad && p.grad?.storage === gradArena && p.grad?.offset == p.offset, "\(key) grad slot")
    }
}

@Test func gradientsAccumulateInTheArenaAndZeroGradClears() {
    let store = ParameterStore(seed: 5)
    let lin = Linear(store.root["lin"], 3, 2)
    store.finalize()
    let x = Tensor.randn([4, 3], seed: 9)
    let single = gradients(of: lin(x).square().sum(), wrt: [lin.weight])[0]!
    lin(x).square().sum().backward()
    lin(x).square().sum().backward()
    #expect(lin.weight.grad!.storage === lin.bias!.grad!.storage)
    expectClose(lin.weight.grad!, single * 2.0, atol: 1e-6, rtol: 1e-6, "two backward calls")
    store.zeroGrad()
    #expect(lin.weight.grad!.scalars(as: Float.self).allSatisfy { $0 == 0 })
    #expect(lin.bias!.grad!.scalars(as: Float.self).allSatisfy { $0 == 0 })
    let byStore = Dictionary(uniqueKeysWithValues: store.gradients(of: lin(x).square().sum()))
    expectClose(byStore["lin.weight"]!, single, atol: 0, rtol: 0, "store.gradients(of:)")
}

@Test func frozenStoreIsNotTracked() {
    let store = ParameterStore()
    let lin = Linear(store.root, 3, 2)
    store.setRequiresGrad(false)
    store.finalize()
    #expect(!lin(Tensor.ones([1, 3])).isTracked)
    #expect(lin.weight.grad == nil)
    store.setRequiresGrad(true)
    #expect(lin(Tensor.ones([1, 3])).isTracked && lin.weight.grad != nil)
    // Freezing after finalize drops the gradient arena too (a frozen teacher carries no gradient copy).
    store.setRequiresGrad(false)
    #expect(lin.weight.grad == nil && lin.bias!.grad == nil && store.gradArena == nil)
    store.setRequiresGrad(true)
    lin(Tensor.ones([1, 3])).sum().backward()
    #expect(lin.bias!.grad!.scalars(as: Float.self) == [1, 1])
}

/// R6: one error lists every problem; nothing is copied when anything is wrong.
@Test func strictLoadReportsEveryProblemAtOnce() {
    let store = ParameterStore()
    let net = TinyNet(store.root)
    store.finalize()
    var sd = Dictionary(uniqueKeysWithValues: store.stateDict().map { ($0.0, Tensor.ones($0.1.shape)) })
    sd["fc2.bias"] = nil
    sd["fc3.weight"] = Tensor.ones([2])
    sd["head.weight"] = Tensor.ones([4, 5])
    for i in 0..<23 { sd["zextra.\(i)"] = Tensor.ones([1]) }
    let before = net.fc1.weight.clone()
    do {
        try store.load(sd, strict: true)
        Issue.record("load should have thrown")
    } catch let HasteError.stateDict(text) {
        #expect(text.contains("1 missing, 24 unexpected, 1 mis-shaped"), "\(text)")
        #expect(text.contains("  fc2.bias") && text.contains("  fc3.weight"))
        #expect(text.contains("head.weight: model [4, 3] vs file [4, 5]"))
        #expect(text.contains("… and 4 more") && text.contains("hint:"))
    } catch { Issue.record("unexpected error \(error)") }
    expectClose(net.fc1.weight, before, atol: 0, rtol: 0, "untouched after a failed load")

    #expect(throws: HasteError.self) { try store.load(sd, strict: false) }    // the wrong shape still fails
    sd["head.weight"] = Tensor.ones([4, 3])
    #expect(throws: Never.self) { try store.load(sd, strict: false) }
    #expect(net.fc1.weight.scalars(as: Float.self).allSatisfy { $0 == 1 })
    #expect(net.fc2.bias!.scalars(as: Float.self) != [1, 1, 1])              // missing: kept
}

@Test func loadConvertsDtypes() throws {
    let store = ParameterStore()
    let a = store.root.parameter("a", [2, 3], .zeros)
    let b = store.root.parameter("b", [3], .zeros)
    let c = store.root.buffer("c", [2], Tensor.zeros([2]))
    store.finalize()
    let values: [Double] = [0.5, -1.25, 3, 0.1, 7, -2]
    try store.load(["a": Tensor(values, shape: [2, 3]), "b": Tensor([Float(1.5), 2.5, -4]).to(.float16),
                    "c": Tensor([Float(0.75), -8]).to(.bfloat16)])
    expectClose(a, Tensor(values.map(Float.init), shape: [2, 3]), atol: 0, rtol: 0, "float64 → float32")
    #expect(b.scalars(as: Float.self) == [1.5, 2.5, -4])
    #expect(c.scalars(as: Float.self) == [0.75, -8])
    #expect(a.dtype == .float32)
    #expect(throws: HasteError.self) { try store.load(["a": Tensor([Int64](repeating: 1, count: 6), shape: [2, 3])], strict: false) }
}

@Test func initializersAreDeterministicAndHaveTheirStatistics() {
    func build(seed: UInt64) -> ParameterStore {
        let s = ParameterStore(seed: seed)
        s.root.parameter("xavier", [48, 80], .xavierUniform)
        s.root.parameter("normal", [256, 256], .normal(std: 0.02))
        s.root.parameter("linear", [33, 17], .torchDefaultLinear(fanIn: 17))
        s.root.parameter("trunc", [1000], .truncatedNormal(std: 1, a: -1, b: 1.5))
        s.root.parameter("const", [3], .constant(0.25))
        s.root.parameter("given", [2], .tensor(Tensor([Float(1), 2])))
        return s
    }
    let store = build(seed: 42)
    let xavier = store["xavier"]!.scalars(as: Double.self), bound = (6.0 / (48 + 80)).squareRoot()
    #expect(xavier.allSatisfy { Swift.abs($0) <= bound } && xavier.map(Swift.abs).max()! > 0.98 * bound)
    let normal = store["normal"]!.scalars(as: Double.self)
    let mean = normal.reduce(0, +) / Double(normal.count)
    let std = (normal.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(normal.count)).squareRoot()
    #expect(Swift.abs(std - 0.02) < 0.02 * 0.012 && Swift.abs(mean) < 4 * 0.02 / 256)   // ±4 standard errors
    let linear = store["linear"]!.scalars(as: Double.self)
    #expect(linear.allSatisfy { Swift.abs($0) <= 1 / 17.0.squareRoot() })
    let trunc = store["trunc"]!.scalars(as: Double.self)
    #expect(trunc.allSatisfy { $0 >= -1 && $0 <= 1.5 } && trunc.min()! < -0.95 && trunc.max()! > 1.4)
    #expect(store["const"]!.scalars(as: Float.self) == [0.25, 0.25, 0.25])
    #expect(store["given"]!.scalars(as: Float.self) == [1, 2])

    let same = build(seed: 42), other = build(seed: 43)
    for key in ["xavier", "normal", "linear", "trunc"] {
        #expect(same[key]!.scalars(as: Float.self) == store[key]!.scalars(as: Float.self), "\(key): same seed")
        #expect(other[key]!.scalars(as: Float.self) != store[key]!.scalars(as: Float.self), "\(key): other seed")
    }
}

@Test func linearAndMLPMatchTheirDefinition() {
    let store = ParameterStore(seed: 8)
    let mlp = MLP(store.root["mlp"], inFeatures: 5, hidden: 7, outFeatures: 3, activation: .geluTanh)
    let plain = Linear(store.root["plain"], 3, 4, bias: false)
    store.finalize()
    #expect(mlp.fc1.weight.shape == [7, 5] && mlp.fc2.bias!.shape == [3] && plain.bias == nil)
    let x = Tensor.randn([2, 5], seed: 1)
    let expected = (x.matmul(mlp.fc1.weight.transposed()) + mlp.fc1.bias!).geluTanh()
        .matmul(mlp.fc2.weight.transposed()) + mlp.fc2.bias!
    expectClose(mlp(x), expected, atol: 1e-6, rtol: 1e-5, "MLP")
    #expect(mlp.fc1.bias!.scalars(as: Float.self).allSatisfy { $0 == 0 })   // SiT's zero-bias init
}

/// A store planned from a shapes-only build of the same model has the unplanned store's layout, values and
/// regions; while it is built it holds its arena plus one initial value (20 zero-initialised [16, 16] weights:
/// arena + 1 KiB, where the unplanned store holds every value and then the arena: twice the weights).
@Test func plannedStoreMatchesTheUnplannedOneWithOneCopyOfTheWeights() {
    let shapes = ParameterStore(shapesOnly: true)
    _ = TinyNet(shapes.root)
    let planned = ParameterStore(seed: 3, plannedFrom: shapes)
    _ = TinyNet(planned.root)
    planned.finalize()
    let plain = ParameterStore(seed: 3)
    _ = TinyNet(plain.root)
    plain.finalize()
    #expect(planned.keys == plain.keys)
    for ((key, a), (_, b)) in zip(planned.stateDict(), plain.stateDict()) {
        #expect(a.offset == b.offset && a.shape == b.shape && a.requiresGrad == b.requiresGrad, "\(key) slot")
        #expect(a.scalars(as: Float.self) == b.scalars(as: Float.self), "\(key) value")
        #expect(a.grad?.offset == b.grad?.offset, "\(key) gradient slot")
    }
    #expect(planned.nonDecayedRange == plain.nonDecayedRange && planned.bufferRange == plain.bufferRange)

    func weights(_ store: ParameterStore) { for i in 0..<20 { store.root["l\(i)"].parameter("weight", [16, 16], .zeros) } }
    let plan = ParameterStore(shapesOnly: true)
    weights(plan)
    func peak(_ make: () -> ParameterStore) -> Int {
        TensorMemory.measure { () -> Void in
            let store = make()
            store.setRequiresGrad(false)
            weights(store)
            store.finalize()
        }.counts.peakBytes
    }
    let valueBytes = 16 * 16 * 4, arenaBytes = 20 * valueBytes
    #expect(peak { ParameterStore(plannedFrom: plan) } == arenaBytes + valueBytes)
    #expect(peak { ParameterStore() } == 2 * arenaBytes)
}

/// `finalize` hands freed heap pages back to the OS (CPUBackend.releaseFreeMemory): a 16 MiB block written and
/// freed just before (as a model's initial-value temporaries are) is no longer resident afterwards. CPUBackend keeps
/// trimming off, so without the release its pages stay resident (SiT-L/2 bs1: 11.4 GB RSS for a 7.5 GB tensor peak).
/// Residency is read with mincore on the block's own pages (a range the release unmapped counts as not resident).
/// The block must be a heap chunk, not a mapping of its own (a freed mapping is gone without any release): its
/// glibc chunk header says which, and an attempt on a mapped block does not count.
/// Tests on other threads can share this thread's arena and reuse the freed chunk between free and check (CI once
/// saw every page resident again, as a large buffer allocated there would leave it): the block is pinned from
/// behind, so only allocations that fit in it can take it, and the attempt is repeated up to four times. Without
/// the release every attempt fails.
@Test func finalizeReleasesFreedHeapPages() {
    let bytes = 16 << 20, page = Int(sysconf(Int32(_SC_PAGESIZE)))
    _ = CPUBackend.shared                                     // its mallopt settings (no trimming) in force
    let pages = (bytes - page) / page
    // Heap blocks, as kernels' scratch and other non-tensor buffers are (tensor storage this large is HostBlockCache's).
    func attempt() -> (mapped: Bool, before: Int, after: Int) {
        let block = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let mapped = block.load(fromByteOffset: -8, as: UInt.self) & 2 != 0          // glibc's IS_MMAPPED bit
        // Pins until one lies just past the block's end, so that the freed block cannot merge with the free space
        // after it (older free chunks serve the first pins; 1024 × 64 KiB covers 64 MiB of them).
        var pins: [UnsafeMutableRawPointer] = []
        let end = Int(bitPattern: block) + bytes
        for _ in 0..<1024 {
            pins.append(UnsafeMutableRawPointer.allocate(byteCount: 64 << 10, alignment: 64))
            if (end..<end + 4096).contains(Int(bitPattern: pins.last!)) { break }
        }
        defer { pins.forEach { $0.deallocate() } }
        memset(block, 1, bytes)
        let start = (Int(bitPattern: block) + page - 1) / page * page
        func resident() -> Int {
            var vec = [UInt8](repeating: 0, count: pages)
            if mincore(UnsafeMutableRawPointer(bitPattern: start), pages * page, &vec) != 0 {
                #expect(errno == ENOMEM, "mincore: errno \(errno)")
                return 0                                        // (part of) the range is no longer mapped
            }
            return vec.filter { $0 & 1 != 0 }.count
        }
        let before = resident()
        block.deallocate()
        let store = ParameterStore()
        store.root.parameter("w", [4, 4], .ones)
        store.finalize()
        return (mapped, before, resident())
    }
    var tries: [(mapped: Bool, before: Int, after: Int)] = []
    repeat { tries.append(attempt()) } while tries.count < 4 && (tries.last!.mapped || tries.last!.after >= pages / 2)
    let last = tries.last!
    #expect(!last.mapped && last.before == pages && last.after < pages / 2,
            "of \(pages) pages of the freed block, resident before free and after finalize per attempt: \(tries)")
}
