/// Where host → device copies are staged in a ring of pinned host memory (`PinnedUploads`), and which queued copies
/// must end before staging bytes are written again. Pure bookkeeping, generic over the token that says a copy
/// ended (a CUDA event on a GPU, an integer in the tests).
///
/// Reservations follow one another from offset 0; one that does not fit before the end starts again at 0. The
/// copies in flight are kept oldest first. All of them are queued on one stream, so they end in the order they
/// were queued: waiting for the newest copy whose bytes a reservation overlaps waits for the older ones too.
struct StagingRing<Token> {
    /// Reservations start on this many bytes (the DMA engines' and memcpy's preferred alignment).
    static var alignment: Int { 256 }
    let capacity: Int
    /// More copies in flight than this waits for the older half of them (a run of tiny uploads would otherwise
    /// hold an event per 256 bytes of the ring).
    let maxInFlight: Int
    private(set) var head = 0
    /// Copies queued and not yet known to have ended, oldest first: their staging bytes and their token.
    private(set) var inFlight: [(bytes: Range<Int>, token: Token)] = []

    init(capacity: Int, maxInFlight: Int = 1024) {
        precondition(capacity >= StagingRing.alignment && maxInFlight >= 2)
        self.capacity = capacity; self.maxInFlight = maxInFlight
    }

    /// Staging bytes for a copy of `count` bytes (1 … capacity): the offset, and the tokens of the copies now known
    /// to have ended (for reuse). Ended copies are released oldest first while `isDone` says so; then, where the new
    /// bytes overlap copies still in flight (or too many are), `wait` is called once, on the newest of those, and it
    /// and every older copy are released.
    mutating func reserve(_ count: Int, isDone: (Token) -> Bool, wait: (Token) -> Void) -> (offset: Int, released: [Token]) {
        precondition(count > 0 && count <= capacity, "a staging reservation of \(count) bytes in a ring of \(capacity)")
        var released: [Token] = []
        var ended = 0
        while ended < inFlight.count && isDone(inFlight[ended].token) { ended += 1 }
        release(ended, into: &released)
        if inFlight.isEmpty { head = 0 }
        var offset = (head + StagingRing.alignment - 1) / StagingRing.alignment * StagingRing.alignment
        if offset + count > capacity { offset = 0 }
        let wanted = offset..<(offset + count)
        var last = inFlight.lastIndex { $0.bytes.overlaps(wanted) }
        if inFlight.count >= maxInFlight { last = Swift.max(last ?? 0, inFlight.count / 2 - 1) }
        if let last {
            wait(inFlight[last].token)
            release(last + 1, into: &released)
        }
        return (offset, released)
    }

    /// Copies committed so far: a mark for `drain(before:)`.
    private(set) var commits = 0

    /// The copy staged at `offset` (from `reserve`) is queued; `token` will say when it has ended.
    mutating func commit(offset: Int, count: Int, token: Token) {
        inFlight.append((offset..<(offset + count), token))
        head = offset + count
        commits += 1
    }

    /// The stream was waited for, a wait that began when `commits` was `mark`: the copies committed before it have
    /// ended (later ones, queued by another thread meanwhile, may not have). Their tokens, for reuse.
    mutating func drain(before mark: Int) -> [Token] {
        var released: [Token] = []
        release(Swift.max(0, inFlight.count - (commits - mark)), into: &released)
        if inFlight.isEmpty { head = 0 }
        return released
    }

    /// Every copy has ended (the stream was waited for with no copy queued meanwhile).
    mutating func drain() -> [Token] { drain(before: commits) }

    private mutating func release(_ n: Int, into released: inout [Token]) {
        guard n > 0 else { return }
        released += inFlight.prefix(n).map(\.token)
        inFlight.removeFirst(n)
    }
}
