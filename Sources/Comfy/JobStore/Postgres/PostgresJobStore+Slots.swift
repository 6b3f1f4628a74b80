import Foundation
import PostgresNIO

/// Backend slots shared by every instance: one row per slot, taken by an instance for a
/// prompt and given back by its ticket. A slot whose holder stopped renewing is free again,
/// unless the job it holds is still unfinished: that job's take-over moves the slot along, so
/// its prompt, still on ComfyUI, stays counted.
extension PostgresJobStore {
    public func acquireSlot(
        backend: String, capacity: Int, job: String?, priority: JobPriority, deadline: ContinuousClock.Instant
    ) async throws -> BackendSlotTicket {
        try await prepareSlots(backend: backend, capacity: capacity)
        // An interactive waiter is seen by every instance's batch work, which lets it go first.
        let waiter: String? = priority == .interactive ? UUID().uuidString.lowercased() : nil
        if let waiter {
            try await guarded {
                try await execute(
                    """
                    INSERT INTO slot_waiters (ticket, backend, holder, lease_until)
                    VALUES (\(waiter), \(backend), \(instanceID), gateway_now_ms() + \(leaseTimeout.milliseconds))
                    """
                )
            }
        }
        do {
            let ticket = try await waitForSlot(backend: backend, capacity: capacity, job: job, batch: waiter == nil, deadline: deadline)
            if let waiter { await leaveWaiters(waiter) }
            return ticket
        } catch {
            if let waiter { await leaveWaiters(waiter) }
            throw error
        }
    }

    private func leaveWaiters(_ waiter: String) async {
        _ = try? await execute("DELETE FROM slot_waiters WHERE ticket = \(waiter)")
    }

    private func waitForSlot(backend: String, capacity: Int, job: String?, batch: Bool, deadline: ContinuousClock.Instant) async throws -> BackendSlotTicket {
        while true {
            // Listen before looking: a slot freed in between is not missed.
            let freed = changes()
            if let ticket = try await takeSlot(backend: backend, capacity: capacity, job: job, batch: batch) { return ticket }
            guard ContinuousClock.now < deadline else {
                throw ComfyError(code: .timedOut, message: "no ComfyUI backend was free within the job's time (every instance's slots on \(backend) are taken)")
            }
            // A freed slot is announced; a holder that died announces nothing, so look again
            // within a fraction of the lease.
            _ = try? await withDeadline(min(deadline, .now + leaseTimeout / 5), timeout: { CancellationError() }) {
                for await change in freed where change == .slotFreed(backend) || change == .resync { return }
            }
            try Task.checkCancellation()
        }
    }

    public func adoptSlot(of job: String) async -> BackendSlotTicket? {
        let rows = try? await rows("SELECT backend, ticket FROM backend_slots WHERE job_id = \(job) AND holder = \(instanceID) LIMIT 1")
        guard let row = rows?.first, let backend = row.text("backend"), let ticket = row.text("ticket") else { return nil }
        return BackendSlotTicket(backend: backend, ticket: ticket)
    }

    public func releaseSlot(_ ticket: BackendSlotTicket) async {
        _ = try? await execute(
            """
            WITH freed AS (
                UPDATE backend_slots SET holder = NULL, ticket = NULL, job_id = NULL, lease_until = NULL
                WHERE backend = \(ticket.backend) AND ticket = \(ticket.ticket) RETURNING backend
            )
            SELECT pg_notify(\(Self.channel), 'slot ' || backend)::text FROM freed
            """
        )
    }

    /// Makes the backend's slot rows once per capacity (rows past the capacity are not used).
    private func prepareSlots(backend: String, capacity: Int) async throws {
        guard preparedSlots.withLockedValue({ $0[backend] }) != capacity else { return }
        try await guarded {
            try await execute(
                "INSERT INTO backend_slots (backend, slot) SELECT \(backend), generate_series(0, \(capacity - 1)) ON CONFLICT DO NOTHING")
        }
        preparedSlots.withLockedValue { $0[backend] = capacity }
    }

    private func takeSlot(backend: String, capacity: Int, job: String?, batch: Bool) async throws -> BackendSlotTicket? {
        let ticket = UUID().uuidString.lowercased()
        let taken = try await guarded {
            try await rows(
                """
                UPDATE backend_slots SET holder = \(instanceID), ticket = \(ticket), job_id = \(job),
                    lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds)
                WHERE (backend, slot) = (
                    SELECT backend, slot FROM backend_slots AS s
                    WHERE backend = \(backend) AND slot < \(capacity) AND (
                        holder IS NULL OR (lease_until < gateway_now_ms() AND (job_id IS NULL OR NOT EXISTS (
                            SELECT 1 FROM jobs WHERE jobs.id = s.job_id AND jobs.status IN ('queued', 'running')
                        )))
                    )
                    AND NOT (\(batch) AND EXISTS (
                        SELECT 1 FROM slot_waiters WHERE slot_waiters.backend = s.backend AND slot_waiters.lease_until >= gateway_now_ms()
                    ))
                    ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED
                )
                RETURNING slot
                """
            )
        }
        return taken.isEmpty ? nil : BackendSlotTicket(backend: backend, ticket: ticket)
    }

    /// Slots in use on each backend, by every instance (for `/healthz`).
    public func slotsInUse() async throws -> [String: Int] {
        try await guarded {
            var used: [String: Int] = [:]
            for row in try await rows("SELECT backend, COUNT(*) AS n FROM backend_slots WHERE holder IS NOT NULL AND lease_until >= gateway_now_ms() GROUP BY backend") {
                if let backend = row.text("backend") { used[backend] = row.integer("n") ?? 0 }
            }
            return used
        }
    }
}
