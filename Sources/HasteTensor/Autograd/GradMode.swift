/// Whether ops record backward nodes. Task-local, so concurrent tasks (tests, data loaders) never see
/// each other's `noGrad` scopes.
public enum GradMode {
    @TaskLocal static var disabled = false

    public static var isEnabled: Bool { !disabled }

    /// Runs `body` with recording off (torch.no_grad) and restores the previous mode.
    @discardableResult
    public static func withoutGrad<R>(_ body: () throws -> R) rethrows -> R {
        try $disabled.withValue(true) { try body() }
    }

    /// Runs `body` with recording on (torch.enable_grad), e.g. a checkpoint's recompute inside the backward walk.
    @discardableResult
    public static func withGrad<R>(_ body: () throws -> R) rethrows -> R {
        try $disabled.withValue(false) { try body() }
    }
}

/// torch.no_grad(): runs `body` without recording backward nodes.
@discardableResult
public func noGrad<R>(_ body: () throws -> R) rethrows -> R { try GradMode.withoutGrad(body) }
