import Comfy
import Foundation
import Metrics
import Synchronization

/// The bytes of drawing-socket messages received and not yet handled, all sockets together. A
/// message is buffered whole (a sketch of up to `MAX_SKETCH_BYTES`, base64), and nginx lets each
/// address hold `DRAWING_CONNECTIONS` sockets: without a shared bound, a few addresses sending
/// large messages slowly would hold gigabytes.
///
/// One address (an IPv6 address's /64) may hold a sixteenth of the budget, but at least two
/// largest messages. A socket's first 16 KiB are free while it has no whole message waiting, so
/// small messages (`new_seed`, `previews`) always get through. When the budget is full, a
/// message still arriving from the address that holds the most is given up (its socket closed
/// with 1013) for an address that holds less: else about ten addresses (a home IPv6 network has
/// 256 /64s) trickling large messages would shut every painter's sketch out. A socket whose next
/// bytes still do not fit is closed (1013).
final class ReceiveBudget: Sendable {
    let limit: Int
    let perAddress: Int
    static let freeBytes = 16 * 1024

    /// A message still arriving: what its socket holds, and how to close the socket for it.
    private struct Arriving {
        var share: String
        var bytes: Int
        var account: Account
    }

    private struct Held {
        var total = 0
        var byAddress: [String: Int] = [:]
        var arriving: [ObjectIdentifier: Arriving] = [:]

        mutating func remove(_ count: Int, of share: String) {
            total = max(0, total - count)
            let own = byAddress[share, default: 0] - count
            byAddress[share] = own > 0 ? own : nil
        }
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

    /// Takes `count` bytes of `account`'s message arriving, if they fit its address's share and
    /// the budget, making room in the budget from richer addresses' arriving messages.
    fileprivate func take(_ count: Int, arriving account: Account) -> Bool {
        let share = account.share
        var evicted: [Account] = []
        let taken = held.withLock { held in
            guard !account.wasEvicted else { return false }
            let own = held.byAddress[share, default: 0]
            guard own + count <= perAddress else { return false }
            if held.total + count > limit {
                // Chosen first, given up only if they make room: else nobody is closed for nothing.
                guard let victims = Self.victims(in: held, freeing: held.total + count - limit, forShareHolding: own + count, share: share) else { return false }
                for victim in victims {
                    guard let arriving = held.arriving.removeValue(forKey: victim) else { continue }
                    held.remove(arriving.bytes, of: arriving.share)
                    arriving.account.markEvicted()
                    evicted.append(arriving.account)
                }
            }
            held.total += count
            held.byAddress[share] = own + count
            held.arriving[ObjectIdentifier(account), default: Arriving(share: share, bytes: 0, account: account)].bytes += count
            gauge.record(held.total)
            return true
        }
        for account in evicted { account.evict() }
        return taken
    }

    /// Messages arriving to give up for `needed` bytes: each time the richest address's largest,
    /// while that address holds more than `holding` (what the share asking will hold); `nil`
    /// when they do not free enough.
    private static func victims(in held: Held, freeing needed: Int, forShareHolding holding: Int, share: String) -> [ObjectIdentifier]? {
        var byAddress = held.byAddress
        var candidates = held.arriving.filter { $0.value.share != share }
        var chosen: [ObjectIdentifier] = []
        var freed = 0
        while freed < needed {
            let richest = candidates.max { left, right in
                let (a, b) = (byAddress[left.value.share, default: 0], byAddress[right.value.share, default: 0])
                return a != b ? a < b : left.value.bytes < right.value.bytes
            }
            guard let richest, byAddress[richest.value.share, default: 0] > holding else { return nil }
            chosen.append(richest.key)
            candidates[richest.key] = nil
            byAddress[richest.value.share, default: 0] -= richest.value.bytes
            freed += richest.value.bytes
        }
        return chosen
    }

    /// The account's message arrived whole: its bytes stay held (for the reader), and can no
    /// longer be given up for others. Returns them.
    fileprivate func arrived(_ account: Account) -> Int {
        held.withLock { $0.arriving.removeValue(forKey: ObjectIdentifier(account))?.bytes ?? 0 }
    }

    /// The account's message still arriving is given up.
    fileprivate func dropArriving(_ account: Account) {
        held.withLock { held in
            guard let arriving = held.arriving.removeValue(forKey: ObjectIdentifier(account)) else { return }
            held.remove(arriving.bytes, of: arriving.share)
            gauge.record(held.total)
        }
    }

    fileprivate func give(_ count: Int, for share: String) {
        guard count > 0 else { return }
        held.withLock { held in
            held.remove(count, of: share)
            gauge.record(held.total)
        }
    }


    /// One socket's part: what its message still arriving holds (kept by the budget, which may
    /// give it up for another address), then each whole message until the socket's reader is
    /// done with it.
    final class Account: Sendable {
        private struct State {
            /// Whole messages not yet handled, oldest first.
            var whole: [Int] = []
            var closed = false
            var evicted = false
            /// Closes the socket when its message arriving was given up for another address.
            var onEvicted: (@Sendable () -> Void)?
        }

        private let budget: ReceiveBudget
        fileprivate let share: String
        private let state = Mutex(State())

        init(budget: ReceiveBudget, address: String) {
            self.budget = budget
            share = AddressShare.name(of: address)
        }

        /// What to do when the budget gives this socket's message up for another address's
        /// (the socket's handler closes it).
        func whenEvicted(_ action: (@Sendable () -> Void)?) {
            state.withLock { $0.onEvicted = action }
        }

        /// Counts `count` more bytes of the message arriving, of which `total` have come so far.
        func charge(_ count: Int, messageSoFar total: Int) -> Bool {
            let free = state.withLock { $0.whole.isEmpty } ? ReceiveBudget.freeBytes : 0
            let counted = max(0, total - free) - max(0, total - count - free)
            guard counted > 0 else { return !wasEvicted }
            return budget.take(counted, arriving: self)
        }

        /// The message is whole; it waits for the reader.
        func messageArrived() {
            let bytes = budget.arrived(self)
            let orphaned = state.withLock { state in
                guard !state.closed else { return bytes }
                state.whole.append(bytes)
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
            budget.dropArriving(self)
        }

        /// The reader is gone: all the socket held is free.
        func close() {
            budget.dropArriving(self)
            let freed = state.withLock { state in
                defer { state = State(closed: true) }
                return state.whole.reduce(0, +)
            }
            budget.give(freed, for: share)
        }

        fileprivate var wasEvicted: Bool { state.withLock { $0.evicted } }

        /// Called with the budget locked: only this account's own state is touched.
        fileprivate func markEvicted() {
            state.withLock { $0.evicted = true }
        }

        fileprivate func evict() {
            let action = state.withLock { $0.onEvicted }
            action?()
        }
    }
}
