import Foundation
import Logging
import NIOPosix
import ServiceLifecycle

/// Runs `RetentionSweeper` at start-up and then every `interval` until graceful shutdown
/// (`OUTPUT_RETENTION`); without a sweeper it only waits for shutdown.
public struct RetentionService: Service {
    private let sweeper: RetentionSweeper?
    private let interval: Duration
    private let referenced: @Sendable () async throws -> Set<String>
    private let logger: Logger

    /// - Parameters:
    ///   - sweeper: the policy; `nil` when retention is off.
    ///   - interval: the pause between sweeps; by default a tenth of the retention, between a minute and an hour.
    ///   - referenced: file names still in use (e.g. drawing sessions' latest results); kept
    ///     whatever their age. When they cannot be read, the sweep waits for the next turn.
    public init(
        sweeper: RetentionSweeper?, interval: Duration? = nil, logger: Logger,
        referenced: @escaping @Sendable () async throws -> Set<String> = { [] }
    ) {
        self.sweeper = sweeper
        self.interval = interval ?? min(max((sweeper?.retention ?? .seconds(3600)) / 10, .seconds(60)), .seconds(3600))
        self.referenced = referenced
        self.logger = logger
    }

    public func run() async throws {
        guard let sweeper else {
            // The service group ends when any service returns, so an idle one waits for shutdown.
            try? await gracefulShutdown()
            return
        }
        logger.info("retention sweeps scheduled", metadata: [
            "storage.directory": "\(sweeper.directory)", "storage.retention": "\(sweeper.retention)", "storage.interval": "\(interval)",
        ])
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let keep: Set<String>?
                do {
                    keep = try await referenced()
                } catch {
                    logger.warning("retention sweep skipped: the files in use could not be read", metadata: ["error": "\(error)"])
                    keep = nil
                }
                // A listing, a stat and an unlink per file: blocking, so on NIO's thread pool.
                var report: RetentionSweeper.Report?
                if let keep { report = try? await NIOThreadPool.singleton.runIfActive { sweeper.sweep(now: Date(), keep: keep) } }
                if let report, !report.removed.isEmpty || !report.failed.isEmpty {
                    logger.info("retention sweep", metadata: ["storage.removed": "\(report.removed.count)", "storage.failed": "\(report.failed.count)"])
                }
                for name in report?.failed ?? [] {
                    logger.warning("retention could not remove a file", metadata: ["storage.file": "\(name)"])
                }
                do { try await Task.sleep(for: interval) } catch { return }
            }
        }
    }
}
