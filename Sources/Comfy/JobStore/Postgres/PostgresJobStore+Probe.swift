import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// The first connection of a start, made directly rather than through the pool (which retries
/// whatever fails until the start gives up): its reason reaches the operator.
extension PostgresJobStore {
    /// Connects once, again every 250 ms until `deadline`. A refusal that waiting cannot mend
    /// (TLS, authentication, no such database) ends the start at once; a server still down is
    /// reported at the deadline, with the last reason either way.
    static func probe(_ url: PostgresStoreURL, tls: TLSConfiguration?, deadline: ContinuousClock.Instant, logger: Logger) async throws {
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        let mode: PostgresConnection.Configuration.TLS =
            switch (url.tls, context) {
            case (.prefer, let context?): .prefer(context)
            case (.require, let context?), (.verifyFull, let context?): .require(context)
            default: .disable
            }
        var configuration = PostgresConnection.Configuration(
            host: url.host, port: url.port, username: url.username, password: url.password, database: url.database, tls: mode
        )
        configuration.options.connectTimeout = .seconds(5)
        var reason = "no answer"
        while ContinuousClock.now < deadline {
            do {
                let connection = try await PostgresConnection.connect(
                    on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: 0, logger: logger
                ).get()
                try? await connection.close()
                return
            } catch {
                reason = Self.connectionFailure(error)
                if Self.isPermanent(error) { throw JobStoreError(.unavailable, "cannot open the job database \(url): \(reason)") }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw JobStoreError(.unavailable, "cannot reach the job database \(url) within 30 s: \(reason)")
    }

    /// Whether a failed connection fails again however long one waits.
    private static func isPermanent(_ error: any Error) -> Bool {
        if error is NIOSSLError { return true }
        guard let error = error as? PSQLError else { return false }
        if error.underlying is NIOSSLError { return true }
        switch error.code {
        case .sslUnsupported, .unsupportedAuthMechanism, .authMechanismRequiresPassword, .saslError:
            return true
        case .server:
            // 28: authorization (a wrong password, a user pg_hba refuses); 3D000: no such database.
            let state = error.serverInfo?[.sqlState] ?? ""
            return state.hasPrefix("28") || state == "3D000"
        default:
            return false
        }
    }

    /// A failed connection's reason, for the operator (it names no password).
    private static func connectionFailure(_ error: any Error) -> String {
        let underlying = (error as? PSQLError)?.underlying ?? error
        if let error = error as? PSQLError, error.code == .sslUnsupported { return "the server does not offer TLS (sslmode asks for it)" }
        if let message = (error as? PSQLError)?.serverInfo?[.message] { return message }
        return String(String(describing: underlying).prefix(300))
    }
}
