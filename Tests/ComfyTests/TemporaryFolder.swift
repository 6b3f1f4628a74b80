import Foundation

/// Runs `body` with a new, empty folder under the system's temporary one; removes it after.
func withTemporaryFolder<T>(_ label: String, _ body: (String) async throws -> T) async throws -> T {
    let path = NSTemporaryDirectory() + "\(label)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}
