/// Caller-bug checks (STYLE R3). Swift's `precondition` drops its message in optimised builds (measured: a
/// bare trap, no text), so a user of the release CLI would not learn which op and shapes were wrong;
/// `fatalError` keeps it. Use `require` wherever the message matters, which is everywhere an op validates.
@inlinable @inline(__always)
public func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                    file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
