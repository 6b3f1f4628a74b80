import Foundation

/// Object names in a bucket: a configured prefix followed by the image's `<sha256>.<ext>`.
enum ObjectKey {
    /// `images` → `images/`, `/a/b/` → `a/b/`, `` → ``: keys never start with `/`.
    static func normalizedPrefix(_ prefix: String) -> String {
        var result = Substring(prefix.trimmingCharacters(in: .whitespaces))
        while result.hasPrefix("/") { result.removeFirst() }
        guard !result.isEmpty else { return "" }
        return result.hasSuffix("/") ? String(result) : result + "/"
    }

    /// A base URL without trailing slashes, so `base + "/" + key` has exactly one.
    static func trimmingTrailingSlashes(_ url: String) -> String {
        var result = url
        while result.hasSuffix("/") { result.removeLast() }
        return result
    }
}
