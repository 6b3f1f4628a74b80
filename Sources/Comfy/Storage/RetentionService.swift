import Foundation
import Logging
import NIOPosix
import ServiceLifecycle

/// Runs `RetentionSweeper` at start-up and then every `interval` until graceful shutdown
/// (`OUTPUT_RETENTION`); without a sweeper it only waits for shutdown.
public struct RetentionService: Service {
    private let sweeper: RetentionSweeper?
    private let interval: Duration
    private let referenced: @Sendable () async -> Set<String>
    private let logger: Logger

    /// - Parameters:
    ///   - sweeper: the policy; `nil` when retention is off.
    ///   - interval: the pause between sweeps; by default a tenth of the retention, between a minute and an hour.
    ///   - referenced: file names still in use (e.g. drawing sessions' latest results); kept whatever their age.
    public init(
        sweeper: RetentionSweeper?, interval: Duration? = nil, logger: Logger,
        referenced: @escaping @Sendable () async -> Set<String> = { [] }
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
                let keep = await referenced()
                // A listing, a stat and an unlink per file: blocking, so on NIO's thread pool.
                let report = try? await NIOThreadPool.singleton.runIfActive { sweeper.sweep(now: Date(), keep: keep) }
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
