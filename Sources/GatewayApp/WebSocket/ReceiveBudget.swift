import Metrics
import Synchronization

/// The bytes of drawing-socket messages received and not yet done with, all sockets together. A
/// message is buffered whole (a sketch of up to `MAX_SKETCH_BYTES`, base64), and nginx lets each
/// address hold `DRAWING_CONNECTIONS` sockets: without a shared bound, a few addresses sending
/// large messages slowly would hold gigabytes. One address may hold a quarter of the budget
/// (at least one largest message), so a few cannot shut every painter out; a message's first
/// `freeBytes` are not counted, so small messages (`new_seed`, `previews`) always get through.
/// A socket whose next bytes do not fit is closed (1013).
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

    /// - Parameter largestMessage: what one address must be able to send at once.
    init(limit: Int, largestMessage: Int) {
        self.limit = limit
        perAddress = min(limit, max(limit / 4, largestMessage + 14))
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

    /// One socket's part: what its message still arriving holds, then each whole message until
    /// the socket's reader is done with it.
    final class Account: Sendable {
        private struct State {
            var arriving = 0
            /// Whole messages not yet done with, oldest first.
            var whole: [Int] = []
            var closed = false
        }

        private let budget: ReceiveBudget
        private let address: String
        private let state = Mutex(State())

        init(budget: ReceiveBudget, address: String) {
            self.budget = budget
            self.address = address
        }

        /// Counts `count` more bytes of the message arriving, of which `total` have come so far.
        func charge(_ count: Int, messageSoFar total: Int) -> Bool {
            let counted = max(0, total - ReceiveBudget.freeBytes) - max(0, total - count - ReceiveBudget.freeBytes)
            guard counted > 0 else { return true }
            guard budget.take(counted, for: address) else { return false }
            state.withLock { $0.arriving += counted }
            return true
        }

        /// The message is whole; it waits for the reader.
        func messageArrived() {
            state.withLock { state in
                state.whole.append(state.arriving)
                state.arriving = 0
            }
        }

        /// The reader is done with the oldest whole message.
        func messageDone() {
            let freed = state.withLock { state in state.whole.isEmpty ? 0 : state.whole.removeFirst() }
            budget.give(freed, for: address)
        }

        /// The socket is gone: all it held is free.
        func close() {
            let freed = state.withLock { state in
                defer { state = State(closed: true) }
                return state.closed ? 0 : state.arriving + state.whole.reduce(0, +)
            }
            budget.give(freed, for: address)
        }
    }
}
