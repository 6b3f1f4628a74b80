import Foundation
@testable import GatewayApp
import Testing

/// The `.env` file: read when it is there, never silently skipped when it is there but unreadable.
struct EnvironmentFileTests {
    @Test func aDotEnvThatCannotBeReadStopsStartUpAndAMissingOneIsNoMatter() throws {
        let directory = NSTemporaryDirectory() + "dotenv-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Latin-1 bytes, as an editor may save "COMFYUI_SERVER=… # café".
        let path = "\(directory)/.env"
        try Data([0x41, 0x3D, 0x31, 0x20, 0x23, 0x20, 0x63, 0x61, 0x66, 0xE9, 0x0A]).write(to: URL(fileURLWithPath: path))
        do {
            _ = try Environment(processEnvironment: [:], dotEnvPath: path)
            Issue.record("a .env that is not UTF-8 was ignored")
        } catch let error as ConfigurationError {
            #expect(error.variable == path)
            #expect(error.problem.contains("UTF-8"))
        }
        #expect(try Environment(processEnvironment: ["A": "2"], dotEnvPath: "\(directory)/missing.env").all == ["A": "2"])
    }
}
