/// What a recorded graph holds for its backward pass, per node type: a measurement for memory work
/// (`haste bench train --only ROW --saved-bytes`; Scripts/analysis/saved_bytes_torch.py is the torch side).
/// Each storage counts once, under the first node (in forward order) that holds it; storages of leaves that
/// require grad (parameters) are left out. `saved` are the bytes a node keeps in its own fields (what torch
/// calls saved tensors); `edges` the bytes reachable only through the graph's edges (`Backward.inputs`: an
/// intermediate that no backward reads but the graph keeps alive, e.g. the source of a copied view).
public struct SavedBytesReport: Sendable {
    public struct Row: Sendable {
        public var op: String, nodes = 0, savedBytes = 0, edgeBytes = 0
    }
    public var rows: [Row]
    public var totalSaved: Int { rows.reduce(0) { $0 + $1.savedBytes } }
    public var totalEdges: Int { rows.reduce(0) { $0 + $1.edgeBytes } }

    /// A text table, MiB, largest first.
    public var table: String {
        let mib = { (b: Int) in String(format: "%9.1f", Double(b) / 1_048_576) }
        var lines = ["op                               nodes  saved MiB  edges MiB"]
        for r in rows.sorted(by: { $0.savedBytes + $0.edgeBytes > $1.savedBytes + $1.edgeBytes }) {
            lines.append(r.op.padding(toLength: 32, withPad: " ", startingAt: 0) + String(format: " %5d", r.nodes)
                         + "  " + mib(r.savedBytes) + "  " + mib(r.edgeBytes))
        }
        lines.append("total".padding(toLength: 38, withPad: " ", startingAt: 0) + "  " + mib(totalSaved) + "  " + mib(totalEdges))
        return lines.joined(separator: "\n")
    }
}

extension Tensor {
    /// The graph behind `roots`, walked in forward order, with the bytes each node type keeps (see the report).
    public static func savedBytes(from roots: [Tensor]) -> SavedBytesReport {
        let order = topologicalOrder(roots)
        var leafStorages = Set<ObjectIdentifier>()
        for t in order where t.gradFn == nil && t.requiresGrad { leafStorages.insert(ObjectIdentifier(t.storage)) }
        var rows: [String: SavedBytesReport.Row] = [:], owner: [ObjectIdentifier: String] = [:]
        var edgeOnly: [ObjectIdentifier: (String, Int)] = [:]
        for t in order {
            guard let node = t.gradFn else { continue }
            let op = String(describing: type(of: node))
            rows[op, default: .init(op: op)].nodes += 1
            var fields: [Tensor] = []
            collectTensors(Mirror(reflecting: node), into: &fields, depth: 0)
            for s in fields.map(\.storage) {
                let id = ObjectIdentifier(s)
                guard !leafStorages.contains(id), owner[id] == nil else { continue }
                owner[id] = op
                edgeOnly[id] = nil
                rows[op]!.savedBytes += s.byteCount
            }
            for s in node.inputs.map(\.storage) {
                let id = ObjectIdentifier(s)
                if !leafStorages.contains(id) && owner[id] == nil && edgeOnly[id] == nil { edgeOnly[id] = (op, s.byteCount) }
            }
        }
        // Edge-only storages of the roots' own graph that some node's fields claimed later are not edge-only.
        for (id, (op, bytes)) in edgeOnly where owner[id] == nil { rows[op]!.edgeBytes += bytes }
        return SavedBytesReport(rows: Array(rows.values))
    }

    /// Tensors in a node's stored properties, through optionals, arrays, tuples and enum payloads.
    private static func collectTensors(_ mirror: Mirror, into out: inout [Tensor], depth: Int) {
        guard depth < 6 else { return }
        for child in mirror.children {
            if let t = child.value as? Tensor { out.append(t); continue }
            let m = Mirror(reflecting: child.value)
            if m.displayStyle == .class { continue }             // another object (a module, a closure box): not saved data
            collectTensors(m, into: &out, depth: depth + 1)
        }
    }
}
