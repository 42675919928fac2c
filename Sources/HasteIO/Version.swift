/// haste's version, shown by `haste --version` and `haste doctor`, and written into checkpoint metadata.
public enum HasteVersion {
    public static let current = "0.1.0"
}
