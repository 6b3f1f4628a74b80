import CFastCGI
import Comfy
import Foundation
import GatewayApp
import Logging
import ServiceLifecycle
import Synchronization

/// The FastCGI side of the gateway: a pool of threads blocked in libfcgi's `FCGX_Accept_r` on a
/// unix socket that nginx connects to.
///
/// This is the one seam between blocking C and Swift concurrency: each thread reads its request,
/// hands it to the async `handler` as a `Task`, and blocks (in `poll`, off the cooperative pool)
/// until the task answers or nginx hangs up, which cancels the task.
final class FastCGIServer: Service {
    typealias Handler = @Sendable (GatewayRequest) async -> GatewayResponse

    private let socketPath: String
    private let threadCount: Int
    private let maxBodyBytes: Int
    private let handler: Handler
    private let logger: Logger
    /// How long in-flight requests may take to finish after SIGTERM.
    private let drainTimeout: Duration
    /// Called when draining starts, and when the drain time is up.
    private let onDrain: @Sendable () async -> Void
    private let onDrainTimeout: @Sendable () async -> Void
    /// Makes the socket reachable by nginx's workers only (`NginxSite.grantSocket`).
    private let grantSocket: @Sendable (String) -> Void

    init(
        socketPath: String, threads: Int, maxBodyBytes: Int, drainTimeout: Duration = .seconds(120), logger: Logger,
        onDrain: @escaping @Sendable () async -> Void = {}, onDrainTimeout: @escaping @Sendable () async -> Void = {},
        grantSocket: @escaping @Sendable (String) -> Void, handler: @escaping Handler
    ) {
        self.grantSocket = grantSocket
        self.drainTimeout = drainTimeout
        self.onDrain = onDrain
        self.onDrainTimeout = onDrainTimeout
        self.socketPath = socketPath
        self.threadCount = threads
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
        self.handler = handler
    }

    /// Serves until graceful shutdown, then lets every in-flight request finish.
    func run() async throws {
        // libfcgi takes `host:port` for TCP itself (nginx on other machines).
        let tcp = ListenAddress(socketPath).isTCP
        if !tcp { unlink(socketPath) }
        let listenFD = FCGX_OpenSocket(socketPath, 4096)
        guard listenFD >= 0 else {
            throw ConfigurationError(variable: "FCGI_SOCKET", problem: "cannot listen on \(socketPath): \(String(cString: strerror(errno)))")
        }
        // Only nginx's workers may connect (their user's group when started as root, see nginx/nginx.conf).
        if !tcp { grantSocket(socketPath) }
        logger.info("FastCGI listening", metadata: ["fcgi.socket": "\(socketPath)", "fcgi.threads": "\(threadCount)"])

        let finished = ThreadCountdown(threadCount)
        for index in 0..<threadCount {
            let worker = FastCGIWorker(listenFD: listenFD, maxBodyBytes: maxBodyBytes, handler: handler, logger: logger)
            let thread = Thread {
                worker.serve()
                finished.arrive()
            }
            thread.name = "fcgi-\(index)"
            // A handler runs on this stack until it first suspends: parsing, checking and freeing
            // a body nested `JSONParser.maxDepth` deep recurse here (256 KiB overflowed at 500).
            // Address space only: the pages a request does not touch cost no memory.
            thread.stackSize = 1 << 20
            thread.start()
        }

        try? await gracefulShutdown()
        logger.info("FastCGI draining in-flight requests")
        await onDrain()
        // The only way to wake threads blocked in accept(2).
        shutdown(listenFD, Int32(SHUT_RDWR))
        // Bounded: when the drain time is up, queued jobs are answered; a few seconds later
        // whatever still runs is abandoned so that the process exits.
        var drained = await finished.wait(upTo: drainTimeout)
        if !drained {
            logger.warning("drain time is up; answering the jobs still queued")
            await onDrainTimeout()
            drained = await finished.wait(upTo: .seconds(5))
        }
        if !drained { logger.error("requests still running after the drain time; exiting without them") }
        close(listenFD)
        if !ListenAddress(socketPath).isTCP { unlink(socketPath) }
        logger.info("FastCGI stopped")
    }
}

/// Lets async code wait, for a bounded time, for a number of threads to finish.
final class ThreadCountdown: Sendable {
    private let remaining: Mutex<Int>
    private let done = WaiterTable<Int, Void>()

    init(_ count: Int) {
        remaining = Mutex(count)
    }

    func arrive() {
        let last = remaining.withLock { count in
            count -= 1
            return count == 0
        }
        // Kept for a waiter that comes later: every wait after the last thread returns at once.
        if last { done.resume(0, with: .success(())) }
    }

    /// Whether every thread finished within `limit`.
    func wait(upTo limit: Duration) async -> Bool {
        if remaining.withLock({ $0 }) == 0 { return true }
        let done = self.done
        let finished = await done.wait(for: 0, until: .now + limit) != nil
        // A later wait must see the result again.
        if finished { done.resume(0, with: .success(())) }
        return finished
    }
}
