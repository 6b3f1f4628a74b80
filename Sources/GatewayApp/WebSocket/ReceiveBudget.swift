import Foundation
import Metrics
import Synchronization

/// The bytes of drawing-socket messages received and not yet handled, all sockets together. A
/// message is buffered whole (a sketch of up to `MAX_SKETCH_BYTES`, base64), and nginx lets each
/// address hold `DRAWING_CONNECTIONS` sockets: without a shared bound, a few addresses sending
/// large messages slowly would hold gigabytes.
///
/// One address (an IPv6 address's /64) may hold a sixteenth of the budget, but at least two
/// largest messages, so a few cannot shut every painter out. A socket's first 16 KiB are free
/// while it has no whole message waiting, so small messages (`new_seed`, `previews`) always get
/// through. A socket whose next bytes do not fit is closed (1013).
final class ReceiveBudget: Sendable {
    let limit: Int
    let perAddress: Int
    static let freeBytes = 16 * 1024

    private struct Held {
        var total = 0
        var byAddress: [String: Int] = [:]
    }

    private let held = Mutex(Held())
    private let gauge = Gauge(label: "comfy_gateway_websocket_receiving_bytes")

    /// - Parameter largestMessage: the largest message a socket takes.
    init(limit: Int, largestMessage: Int) {
        self.limit = limit
        perAddress = min(limit, max(limit / 16, 2 * (largestMessage + 14)))
    }

    /// What is held now.
    var taken: Int { held.withLock { $0.total } }

    /// Takes `count` bytes for `address` if they fit both the budget and the address's share.
    func take(_ count: Int, for address: String) -> Bool {
        held.withLock { held in
            let own = held.byAddress[address, default: 0]
            guard held.total + count <= limit, own + count <= perAddress else { return false }
            held.total += count
            held.byAddress[address] = own + count
            gauge.record(held.total)
            return true
        }
    }

    func give(_ count: Int, for address: String) {
        guard count > 0 else { return }
        held.withLock { held in
            held.total = max(0, held.total - count)
            let own = held.byAddress[address, default: 0] - count
            held.byAddress[address] = own > 0 ? own : nil
            gauge.record(held.total)
        }
    }

    /// Whose share a client's bytes count toward: the address, or an IPv6 address's /64 (one
    /// subscriber's whole network, which one attacker has).
    static func shareName(of address: String) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        guard address.contains(":"), inet_pton(AF_INET6, address, &bytes) == 1 else { return address }
        return bytes.prefix(8).map { String(format: "%02x", $0) }.joined() + "/64"
    }

    /// One socket's part: what its message still arriving holds, then each whole message until
    /// the socket's reader is done with it.
    final class Account: Sendable {
        private struct State {
            var arriving = 0
            /// Whole messages not yet handled, oldest first.
            var whole: [Int] = []
            var closed = false
        }

        private let budget: ReceiveBudget
        private let share: String
        private let state = Mutex(State())

        init(budget: ReceiveBudget, address: String) {
            self.budget = budget
            share = ReceiveBudget.shareName(of: address)
        }

        /// Counts `count` more bytes of the message arriving, of which `total` have come so far.
        func charge(_ count: Int, messageSoFar total: Int) -> Bool {
            let free = state.withLock { $0.whole.isEmpty } ? ReceiveBudget.freeBytes : 0
            let counted = max(0, total - free) - max(0, total - count - free)
            guard counted > 0 else { return true }
            guard budget.take(counted, for: share) else { return false }
            state.withLock { $0.arriving += counted }
            return true
        }

        /// The message is whole; it waits for the reader.
        func messageArrived() {
            let orphaned: Int = state.withLock { state in
                defer { state.arriving = 0 }
                guard !state.closed else { return state.arriving }
                state.whole.append(state.arriving)
                return 0
            }
            budget.give(orphaned, for: share)
        }

        /// The reader has handled the oldest whole message.
        func messageDone() {
            let freed = state.withLock { state in state.whole.isEmpty ? 0 : state.whole.removeFirst() }
            budget.give(freed, for: share)
        }

        /// The socket stopped reading: the message still arriving is given up.
        func stopArriving() {
            let freed = state.withLock { state in
                defer { state.arriving = 0 }
                return state.arriving
            }
            budget.give(freed, for: share)
        }

        /// The reader is gone: all the socket held is free.
        func close() {
            let freed = state.withLock { state in
                defer { state = State(closed: true) }
                return state.arriving + state.whole.reduce(0, +)
            }
            budget.give(freed, for: share)
        }
    }
}
