import NIOConcurrencyHelpers

/// How many host lookups each owner (an API key, a client address's share) has running on the
/// resolver's threads, past their deadline too: a lookup that never answers holds its thread
/// for the resolver's own time, and one owner's domains timing out must not hold them all.
final class LookupShares: Sendable {
    let perOwner: Int
    private let running = NIOLockedValueBox<[String: Int]>([:])

    init(perOwner: Int) {
        self.perOwner = perOwner
    }

    /// Takes a place for `owner`'s lookup; `false` while it has `perOwner` running.
    func admit(_ owner: String) -> Bool {
        running.withLockedValue { running in
            guard running[owner, default: 0] < perOwner else { return false }
            running[owner, default: 0] += 1
            return true
        }
    }

    /// `owner`'s lookup is done (its thread is free).
    func done(_ owner: String) {
        running.withLockedValue { running in
            running[owner, default: 1] -= 1
            if running[owner] == 0 { running[owner] = nil }
        }
    }

    /// Lookups running, all owners together.
    var total: Int { running.withLockedValue { $0.values.reduce(0, +) } }
}
