import Comfy
import Foundation

/// One HTTP client for all tests: its threads are reused.
let testHTTP = CurlHTTPClient(threads: 64)

/// Runs `body` with an emulator and a gateway in front of it; stops both and removes the files after.
func withGateway<T>(
    _ label: String,
    emulatorArguments: [String] = [],
    environment: [String: String] = [:],
    _ body: (Gateway, Emulator) async throws -> T
) async throws -> T {
    let directory = try TestPaths.makeTemporaryDirectory(label)
    let emulator = try Emulator(directory: directory, http: testHTTP, arguments: emulatorArguments)
    defer { emulator.stop() }
    let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: environment)
    defer { gateway.stop() }
    try await gateway.waitUntilHealthy()
    let result = try await body(gateway, emulator)
    try? FileManager.default.removeItem(atPath: directory)
    return result
}
