/// Jobs waiting for one priority, taken in turns by owner (a session, a caller): one busy
/// owner cannot starve the others.
struct OwnerQueue: Sendable {
    /// Owners with waiting jobs, in the order of their next turn.
    private var turns: [String] = []
    private var jobs: [String: [UInt64]] = [:]
    /// Waiting jobs of every owner.
    var count: Int { jobs.values.reduce(0) { $0 + $1.count } }

    /// Adds a job behind the owner's others.
    mutating func append(_ job: UInt64, owner: String) {
        if jobs[owner, default: []].isEmpty { turns.append(owner) }
        jobs[owner, default: []].append(job)
    }

    /// Puts a job back first in line (a retry after its backend failed).
    mutating func prepend(_ job: UInt64, owner: String) {
        if jobs[owner, default: []].isEmpty {
            turns.insert(owner, at: 0)
        } else if let index = turns.firstIndex(of: owner) {
            turns.remove(at: index)
            turns.insert(owner, at: 0)
        }
        jobs[owner, default: []].insert(job, at: 0)
    }

    /// The next job that `accept`s, in owner turns: the first acceptable job of the owner whose
    /// turn it is; that owner goes to the back. Passed-over jobs keep their places.
    mutating func popFirst(where accept: (UInt64) -> Bool) -> UInt64? {
        for (turn, owner) in turns.enumerated() {
            guard let index = jobs[owner]!.firstIndex(where: accept) else { continue }
            let job = jobs[owner]!.remove(at: index)
            turns.remove(at: turn)
            if jobs[owner]!.isEmpty {
                jobs[owner] = nil
            } else {
                turns.append(owner)
            }
            return job
        }
        return nil
    }

    /// Removes a waiting job; returns whether it was here.
    mutating func remove(_ job: UInt64) -> Bool {
        for (owner, list) in jobs {
            guard let index = list.firstIndex(of: job) else { continue }
            jobs[owner]!.remove(at: index)
            if jobs[owner]!.isEmpty {
                jobs[owner] = nil
                turns.removeAll { $0 == owner }
            }
            return true
        }
        return false
    }
}
