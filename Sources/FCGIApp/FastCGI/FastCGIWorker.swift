import CFastCGI
import Foundation
import GatewayApp
import Logging
import Synchronization

/// One FastCGI thread: accepts a request, runs the handler task, writes the answer, repeats.
struct FastCGIWorker: Sendable {
    let listenFD: Int32
    let maxBodyBytes: Int
    let handler: FastCGIServer.Handler
    let logger: Logger

    /// Runs until the listening socket is shut down.
    func serve() {
        guard let request = cfastcgi_request_new(listenFD) else { return }
        defer { cfastcgi_request_free(request) }
        let wakeFD = cfastcgi_wake_fd_new()
        defer { close(wakeFD) }
        while FCGX_Accept_r(request) >= 0 {
            let exchange = FastCGIExchange(request: request)
            let response: GatewayResponse
            switch exchange.readRequest(maxBodyBytes: maxBodyBytes) {
            case .success(let gatewayRequest):
                guard let answer = run(gatewayRequest, connectionFD: cfastcgi_request_fd(request), wakeFD: wakeFD) else {
                    FCGX_Finish_r(request)
                    continue
                }
                response = answer
            case .failure(let error):
                response = error.response
            }
            exchange.write(response)
            FCGX_Finish_r(request)
        }
    }

    /// Runs the handler as a task and blocks this thread until it answers. Returns `nil` when
    /// nginx hung up first (the client went away); the task is then cancelled.
    private func run(_ request: GatewayRequest, connectionFD: Int32, wakeFD: Int32) -> GatewayResponse? {
        let box = ResponseBox()
        let handler = self.handler
        // Started on this thread: a handler that never suspends (most answers) finishes before
        // `Task.immediate` returns, so the thread neither sleeps in poll nor hands over.
        let task = Task.immediate {
            let response = await handler(request)
            // The eventfd only when the thread sleeps in poll: an answer made inline needs no wake-up.
            if box.set(response) {
                var one: UInt64 = 1
                _ = Foundation.write(wakeFD, &one, 8)
            }
        }
        if let answered = box.takeUnlessWaiting() { return answered }
        var hungUp = false
        while true {
            var fds = [
                pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: hungUp ? -1 : connectionFD, events: cfastcgi_pollrdhup, revents: 0),
            ]
            guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { break }
            if fds[0].revents & Int16(POLLIN) != 0 {
                var count: UInt64 = 0
                _ = read(wakeFD, &count, 8)
                break
            }
            if !hungUp, fds[1].revents & (cfastcgi_pollrdhup | Int16(POLLHUP | POLLERR)) != 0 {
                hungUp = true
                logger.info("client went away; cancelling its request", metadata: ["http.path": "\(request.path)"])
                task.cancel()
            }
        }
        return hungUp ? nil : box.take()
    }
}

/// Carries a task's response to the FastCGI thread that waits for it, and tells the task
/// whether that thread went to sleep (then it must be woken).
private final class ResponseBox: Sendable {
    private struct State {
        var response: GatewayResponse?
        var threadWaits = false
    }

    private let state = Mutex(State())

    /// Stores the answer; returns whether the thread waits in poll for it.
    func set(_ response: GatewayResponse) -> Bool {
        state.withLock { state in
            state.response = response
            return state.threadWaits
        }
    }

    /// The answer if it is there already; else marks the thread as waiting and returns `nil`.
    func takeUnlessWaiting() -> GatewayResponse? {
        state.withLock { state in
            if let response = state.response.take() { return response }
            state.threadWaits = true
            return nil
        }
    }

    func take() -> GatewayResponse? { state.withLock { $0.response.take() } }
}
