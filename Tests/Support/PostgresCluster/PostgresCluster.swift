import Foundation

/// A private PostgreSQL server for one test (scripts/postgres-cluster.sh): initdb into a
/// temporary folder, started on a free port of 127.0.0.1, with a database `gateway`. Shared by
/// the store's tests and the end-to-end ones.
public final class PostgresCluster: Sendable {
    public let directory: String
    public let port: Int
    /// TLS on, with a self-signed certificate for `localhost`.
    public let tls: Bool
    /// An address it listens on besides 127.0.0.1 (trusting the clients of its subnet).
    public let otherAddress: String?

    /// `JOB_STORE` for it.
    public var url: String { url(host: "127.0.0.1") }

    public func url(host: String) -> String { "postgres://postgres@\(host):\(port)/gateway" }

    public init(tls: Bool = false, alsoListeningOn otherAddress: String? = nil) throws {
        directory = NSTemporaryDirectory() + "pg-\(UUID().uuidString.prefix(8))"
        port = Self.freePort()
        self.tls = tls
        self.otherAddress = otherAddress
        try start()
    }

    private func start() throws { try Self.script("start", directory, "\(port)", tls ? "tls" : "", otherAddress ?? "") }

    /// A crash of the server: SIGKILL, no shutdown.
    public func kill() throws { try Self.script("kill", directory) }

    /// Starts it again on the same folder and port.
    public func restart() throws { try start() }

    public func stop() {
        try? Self.script("stop", directory)
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func script(_ arguments: String...) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: packageRoot + "/scripts/postgres-cluster.sh")
        process.arguments = arguments
        let errorPath = NSTemporaryDirectory() + "pg-script-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errorPath) }
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Reaped here: Foundation's own watcher can miss the exit under the test runner.
        var status: Int32 = 0
        while process.isRunning, waitpid(process.processIdentifier, &status, WNOHANG) != process.processIdentifier { usleep(10_000) }
        let exit = process.isRunning ? (status >> 8) & 0xFF : process.terminationStatus
        guard exit == 0 else {
            let message = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            throw ClusterFailure("postgres-cluster.sh \(arguments.joined(separator: " ")): \(message)")
        }
    }

    private static var packageRoot: String {
        // Tests/Support/PostgresCluster/this file
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    private static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

public struct ClusterFailure: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
