/// A value under construction: containers are shared by reference (memo, BINGET) and filled in place
/// (APPENDS, SETITEMS, BUILD), as in Python, then turned into a `PickleValue` once.
final class PickleNode {
    enum Kind {
        case value(PickleValue)
        case list([PickleNode])
        case tuple([PickleNode])
        case dict([(PickleNode, PickleNode)])
        case object(String, [PickleNode], PickleNode?)
        case storage(TorchStorage)
    }

    var kind: Kind
    init(_ kind: Kind) { self.kind = kind }

    /// Releases the nodes this one alone holds without recursing: a 40 KB pickle of TUPLE1 opcodes nests 37 000
    /// levels, and the default member-by-member release would recurse that deep and overflow the stack.
    deinit {
        var pending = takeChildren()
        while var node = pending.popLast() {
            if isKnownUniquelyReferenced(&node) { pending += node.takeChildren() }
        }
    }

    /// The nodes this one refers to, which it drops (the node is left an empty tuple).
    private func takeChildren() -> [PickleNode] {
        let old = kind
        kind = .tuple([])
        switch old {
        case let .list(items), let .tuple(items): return items
        case let .dict(pairs): return pairs.flatMap { [$0.0, $0.1] }
        case let .object(_, args, state): return args + (state.map { [$0] } ?? [])
        case .value, .storage: return []
        }
    }

    var kindName: String {
        switch kind {
        case let .value(v): return "the value \(v)"
        case .list: return "a list"
        case .tuple: return "a tuple"
        case .dict: return "a dict"
        case let .object(name, _, _): return "an object of \(name)"
        case .storage: return "a storage"
        }
    }
}
