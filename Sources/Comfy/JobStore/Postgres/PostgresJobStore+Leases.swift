import Foundation
import PostgresNIO

extension PostgresJobStore {
    public func renewLeases() async throws -> [String] {
        try await guarded {
            // Only the jobs it still runs: one it let go of (`forget`) expires, and is taken over.
            let holding = held.withLockedValue { $0.filter { $0.value != Self.fencedOut }.map(\.key) }
            let renewed = try await rows(
                """
                UPDATE jobs SET lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds)
                WHERE lease_owner = \(instanceID) AND id = ANY(\(holding)) AND status IN ('queued', 'running') RETURNING id, lease_generation
                """
            )
            let tickets = slotTickets.withLockedValue { Array($0) }
            try await execute(
                "UPDATE backend_slots SET lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds) WHERE holder = \(instanceID) AND ticket = ANY(\(tickets))"
            )
            let waiting = waiters.withLockedValue { Array($0) }
            try await execute("UPDATE slot_waiters SET lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds) WHERE ticket = ANY(\(waiting))")
            try await execute("UPDATE backend_reports SET lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds) WHERE instance = \(instanceID)")
            let sending = webhookClaims.withLockedValue { Array($0.keys) }
            if !sending.isEmpty {
                let asked = ContinuousClock.now
                let kept = try await rows(
                    """
                    UPDATE jobs SET webhook_next_at = gateway_now_ms() + \(leaseTimeout.milliseconds)
                    WHERE id = ANY(\(sending)) AND webhook_claimed_by = \(instanceID) AND webhook_state = 'pending' RETURNING id
                    """
                ).compactMap { $0.text("id") }
                // Claimed by another instance meanwhile (this one was held up), or recorded.
                let lost = Set(sending).subtracting(kept)
                webhookClaims.withLockedValue { claims in
                    for id in lost { claims[id] = nil }
                    for id in kept where claims[id] != nil { claims[id] = asked }
                }
            }
            let still = Dictionary(renewed.compactMap { row in row.text("id").map { ($0, row.integer("lease_generation") ?? 0) } }) { first, _ in first }
            let asked = Set(holding)
            return held.withLockedValue { held in
                // A lost job keeps a generation no row has: whatever this instance still writes
                // for it is refused, as if it had not heard of the loss.
                let lost = held.filter { asked.contains($0.key) && $0.value != Self.fencedOut && still[$0.key] != $0.value }.map(\.key)
                for id in lost { held[id] = Self.fencedOut }
                return lost.sorted()
            }
        }
    }

    /// The generation of a job this instance lost: no job has it.
    static var fencedOut: Int { -1 }

    /// Its leases run out now: another instance takes its jobs over at once instead of after
    /// `leaseTimeout`.
    public func handBack() async throws {
        try await guarded {
            try await execute(
                """
                UPDATE jobs SET lease_until = 0, process_runs = CASE WHEN status = 'running' AND process_runs > 0 THEN process_runs - 1 ELSE process_runs END
                WHERE lease_owner = \(instanceID) AND status IN ('queued', 'running')
                """
            )
            try await execute("UPDATE backend_slots SET lease_until = 0 WHERE holder = \(instanceID)")
            try await execute("DELETE FROM backend_reports WHERE instance = \(instanceID)")
            held.withLockedValue { $0 = [:] }
        }
    }

    public func acquit(_ ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        try await guarded {
            try await execute("UPDATE jobs SET process_runs = process_runs - 1 WHERE id = ANY(\(ids)) AND process_runs > 0")
        }
    }

    /// Alone on the database: what nobody holds, as another instance would take it over.
    public func takeUpUnfinished() async throws -> [JobRecord] {
        try await takeOverExpired(limit: Int(Int32.max))
    }

    public func takeOverExpired(limit: Int) async throws -> [JobRecord] {
        try await guarded {
            // The slots their prompts hold move with them, in the same statement (a take-over
            // that stored the jobs but not their slots would renew jobs nobody runs): they stay
            // taken while the prompts run. A new ticket each, so that the old holder, if it
            // wakes, cannot give them back; renewed from `adoptSlot` on, so that one whose job
            // never gets that far (cancelled, or failed before) only counts until its job ends.
            // A job not marked running starts afresh here, with a
            // slot of its own: the one it held is freed (moved, it was renewed for as long as
            // this instance lived).
            let taken = try await rows(
                """
                WITH taken AS (
                    UPDATE jobs SET lease_owner = \(instanceID), lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds),
                        lease_generation = lease_generation + 1,
                        -- Its own job (let go when its end could not be stored) it took up alive.
                        process_runs = process_runs + CASE WHEN status = 'running' AND lease_owner IS DISTINCT FROM \(instanceID) THEN 1 ELSE 0 END
                    WHERE seq IN (
                        SELECT seq FROM jobs WHERE status IN ('queued', 'running') AND lease_until < gateway_now_ms()
                        ORDER BY seq LIMIT \(limit) FOR UPDATE SKIP LOCKED
                    )
                    RETURNING *
                ), moved AS (
                    UPDATE backend_slots SET holder = \(instanceID), ticket = gen_random_uuid()::text,
                        lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds)
                    WHERE job_id IN (SELECT id FROM taken WHERE status = 'running' AND prompt_id IS NOT NULL)
                ), freed AS (
                    UPDATE backend_slots SET holder = NULL, ticket = NULL, job_id = NULL, owner = NULL, lease_until = NULL
                    WHERE job_id IN (SELECT id FROM taken WHERE status <> 'running' OR prompt_id IS NULL) RETURNING backend
                )
                SELECT taken.*,
                    (SELECT COUNT(pg_notify(\(Self.channel), 'slot ' || backend)) FROM (SELECT DISTINCT backend FROM freed) AS f) AS notified
                FROM taken ORDER BY taken.seq
                """
            )
            held.withLockedValue { held in
                for row in taken { if let id = row.text("id") { held[id] = row.integer("lease_generation") ?? 0 } }
            }
            return taken.map(JobRecord.init(row:))
        }
    }

    public func announceProgress(of id: String, _ progress: Double) async {
        let payload = "progress \(instanceID) \(id) \((progress * 1000).rounded() / 1000)"
        _ = try? await execute("SELECT pg_notify(\(Self.channel), \(payload))")
    }

    public func changes() -> AsyncStream<JobStoreChange> {
        listener().stream
    }

    /// Runs `body` with a stream of the changes from now on, and stops listening after it. (A
    /// stream from `changes()` that is dropped unfinished stays listening: its continuation,
    /// kept here, keeps it alive.)
    func withChanges<Result>(_ body: (AsyncStream<JobStoreChange>) async throws -> Result) async rethrows -> Result {
        let (stream, key) = listener()
        defer { listeners.withLockedValue { $0.removeValue(forKey: key) }?.finish() }
        return try await body(stream)
    }

    private func listener() -> (stream: AsyncStream<JobStoreChange>, key: UInt64) {
        let (stream, continuation) = AsyncStream.makeStream(of: JobStoreChange.self, bufferingPolicy: .bufferingNewest(1024))
        let key = nextListener.withLockedValue { next in
            next += 1
            return next
        }
        listeners.withLockedValue { $0[key] = continuation }
        continuation.onTermination = { [weak self] _ in
            self?.listeners.withLockedValue { $0[key] = nil }
        }
        return (stream, key)
    }

    /// Listens on the channel until cancelled, on a connection of its own, making it again
    /// when it drops; each new one starts with `resync` for what was missed meanwhile.
    func listen() async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        self.broadcast(.resync)
                        for try await notification in notifications {
                            if let change = self.change(from: notification.payload) { self.broadcast(change) }
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("the job database's notifications stopped; listening again", metadata: ["error": "\(Self.reason(error))"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// A notification's change, unless this instance sent it.
    func change(from payload: String) -> JobStoreChange? {
        let parts = payload.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2 else { return nil }
        if parts[0] == "slot" { return .slotFreed(parts.dropFirst().joined(separator: " ")) }
        guard parts.count >= 3, parts[1] != instanceID else { return nil }
        switch parts[0] {
        case "running": return .running(parts[2])
        case "ended": return .ended(parts[2])
        case "progress": return parts.count == 4 ? Double(parts[3]).map { .progress(parts[2], $0) } : nil
        case "health": return .backendReported
        default: return nil
        }
    }

    func broadcast(_ change: JobStoreChange) {
        for listener in listeners.withLockedValue({ Array($0.values) }) { listener.yield(change) }
    }
}
