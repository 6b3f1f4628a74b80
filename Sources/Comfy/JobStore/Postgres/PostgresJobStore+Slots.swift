import Foundation
import PostgresNIO

/// Backend slots shared by every instance: one row per slot, taken by an instance for a
/// prompt and given back by its ticket. A slot whose holder stopped renewing is free again,
/// unless the job it holds is still unfinished: that job's take-over moves the slot along if the
/// job is running, so its prompt, still on ComfyUI, stays counted (and frees it otherwise).
extension PostgresJobStore {
    public func acquireSlot(
        backend: String, capacity: Int, job: String?, priority: JobPriority, owner: String, ownerMaxRunning: Int?, interactiveBurst: Int,
        deadline: ContinuousClock.Instant
    ) async throws -> BackendSlotTicket {
        try await prepareSlots(backend: backend, capacity: capacity)
        var claim = SlotClaim(
            backend: backend, capacity: capacity, job: job, batch: priority != .interactive, owner: owner, ownerCap: ownerMaxRunning,
            interactiveBurst: max(1, interactiveBurst)
        )
        do {
            // An interactive waiter is seen by every instance's batch work, which lets it go first.
            if !claim.batch { try await wait(as: &claim) }
            let ticket = try await waitForSlot(&claim, deadline: deadline)
            // Its waiter's row went with the take.
            if let waiter = claim.waiter { waiters.withLockedValue { _ = $0.remove(waiter) } }
            return ticket
        } catch {
            if let waiter = claim.waiter { await leaveWaiters(waiter) }
            throw error
        }
    }

    private func waitForSlot(_ claim: inout SlotClaim, deadline: ContinuousClock.Instant) async throws -> BackendSlotTicket {
        let backend = claim.backend
        while true {
            // Listen before looking: a slot freed in between is not missed.
            let taken: BackendSlotTicket?
            do {
                taken = try await withChanges { freed in
                    if let ticket = try await takeSlot(claim) { return ticket }
                    guard ContinuousClock.now < deadline else {
                        throw ComfyError(code: .timedOut, message: "no ComfyUI backend was free within the job's time (every instance's slots on \(backend) are taken)", backend: backend)
                    }
                    // Not free at once: waiting, where the other instances' batch work sees whose turn it is.
                    if claim.waiter == nil { try await wait(as: &claim) }
                    // A freed slot is announced; a holder that died announces nothing, so look again
                    // within a fraction of the lease.
                    _ = try? await withDeadline(min(deadline, .now + leaseTimeout / 5), timeout: { CancellationError() }) {
                        for await change in freed where change == .slotFreed(backend) || change == .resync { return }
                    }
                    return nil
                }
            } catch let error as JobStoreError where error.kind == .unavailable {
                // The database is away for a moment: no slot is known free, so the job waits as
                // for one, within its own time, instead of failing for good.
                guard ContinuousClock.now < deadline else { throw error }
                try await Task.sleep(for: min(leaseTimeout / 5, deadline - .now))
                continue
            }
            if let taken { return taken }
            try Task.checkCancellation()
        }
    }

    /// Makes the claim a waiter's row, leased like a slot, from now on.
    private func wait(as claim: inout SlotClaim) async throws {
        let waiter = UUID().uuidString.lowercased()
        waiters.withLockedValue { _ = $0.insert(waiter) }
        // Left (and no longer renewed) even when the insert fails: one abandoned after its
        // deadline may still land, and must not hold its turn for ever.
        claim.waiter = waiter
        try await guarded {
            try await execute(
                """
                INSERT INTO slot_waiters (ticket, backend, holder, lease_until, owner, owner_cap, batch, burst)
                VALUES (\(waiter), \(claim.backend), \(instanceID), gateway_now_ms() + \(leaseTimeout.milliseconds), \(claim.owner), \(claim.ownerCap),
                    \(claim.batch), \(claim.interactiveBurst))
                """
            )
        }
    }

    private func leaveWaiters(_ waiter: String) async {
        // Not renewed from now on: a row the delete misses runs out.
        waiters.withLockedValue { _ = $0.remove(waiter) }
        // Announced like a freed slot: the waiters behind this one may have a free slot already.
        _ = try? await execute(
            """
            WITH gone AS (DELETE FROM slot_waiters WHERE ticket = \(waiter) RETURNING backend)
            SELECT pg_notify(\(Self.channel), 'slot ' || backend)::text FROM gone
            """
        )
    }

    public func adoptSlot(of job: String) async -> BackendSlotTicket? {
        let rows = try? await rows("SELECT backend, ticket FROM backend_slots WHERE job_id = \(job) AND holder = \(instanceID) LIMIT 1")
        guard let row = rows?.first, let backend = row.text("backend"), let ticket = row.text("ticket") else { return nil }
        // Renewed from now on, until its run gives it back.
        slotTickets.withLockedValue { _ = $0.insert(ticket) }
        return BackendSlotTicket(backend: backend, ticket: ticket)
    }

    public func releaseSlot(_ ticket: BackendSlotTicket) async {
        slotTickets.withLockedValue { _ = $0.remove(ticket.ticket) }
        _ = try? await execute(
            """
            WITH freed AS (
                UPDATE backend_slots SET holder = NULL, ticket = NULL, job_id = NULL, owner = NULL, lease_until = NULL
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

    /// Takes a free slot if the claim's turn has come: no interactive waiter before a batch
    /// claim unless the backend's last slots went to interactive work while batch work waited,
    /// as many as the interactive side's `INTERACTIVE_BURST` (then a batch waiter goes before an
    /// interactive claim; the burst of the interactive side decides both ways, so instances
    /// configured apart cannot each wait for the other, and a waiter of a version without
    /// bursts is never waited for by interactive work), no waiting owner of its kind who holds
    /// fewer slots, and its owner under its cap. Waiters at their own cap wait without holding
    /// the turn. Among owners who hold as many,
    /// whoever looks first takes it: a strict order would leave the slot idle until the one
    /// waiter whose turn it is woke up (measured: 109 jobs/s fell to 63 on two instances).
    private func takeSlot(_ claim: SlotClaim) async throws -> BackendSlotTicket? {
        let ticket = UUID().uuidString.lowercased()
        slotTickets.withLockedValue { _ = $0.insert(ticket) }
        let taken: [PostgresRandomAccessRow]
        do {
            taken = try await takeSlot(claim, ticket: ticket)
        } catch {
            slotTickets.withLockedValue { _ = $0.remove(ticket) }
            throw error
        }
        guard !taken.isEmpty else {
            slotTickets.withLockedValue { _ = $0.remove(ticket) }
            return nil
        }
        return BackendSlotTicket(backend: claim.backend, ticket: ticket)
    }

    private func takeSlot(_ claim: SlotClaim, ticket: String) async throws -> [PostgresRandomAccessRow] {
        let take: PostgresQuery = """
            WITH holding AS (
                -- Counted as the take below counts a slot taken: also one whose holder stopped
                -- renewing while its job is unfinished (its prompt is still on ComfyUI, and the
                -- take-over of the job moves the slot along).
                SELECT owner, COUNT(*) AS n FROM backend_slots AS h
                WHERE owner IS NOT NULL AND holder IS NOT NULL AND (lease_until >= gateway_now_ms() OR (job_id IS NOT NULL AND EXISTS (
                    SELECT 1 FROM jobs WHERE jobs.id = h.job_id AND jobs.status IN ('queued', 'running')
                )))
                GROUP BY owner
            ), mine AS (
                SELECT COALESCE((SELECT n FROM holding WHERE owner = \(claim.owner)), 0) AS n
            ), run AS (
                SELECT COALESCE((SELECT interactive_run FROM backend_turns WHERE backend = \(claim.backend)), 0) AS n
            ), taken AS (
            UPDATE backend_slots SET holder = \(instanceID), ticket = \(ticket), job_id = \(claim.job), owner = \(claim.owner),
                lease_until = gateway_now_ms() + \(leaseTimeout.milliseconds)
            WHERE (backend, slot) = (
                SELECT backend, slot FROM backend_slots AS s
                WHERE backend = \(claim.backend) AND slot < \(claim.capacity) AND (
                    holder IS NULL OR (lease_until < gateway_now_ms() AND (job_id IS NULL OR NOT EXISTS (
                        SELECT 1 FROM jobs WHERE jobs.id = s.job_id AND jobs.status IN ('queued', 'running')
                    )))
                )
                AND (\(claim.ownerCap)::BIGINT IS NULL OR (SELECT n FROM mine) < \(claim.ownerCap)::BIGINT)
                AND NOT EXISTS (
                    SELECT 1 FROM slot_waiters AS w
                    WHERE w.backend = s.backend AND w.lease_until >= gateway_now_ms() AND w.ticket IS DISTINCT FROM \(claim.waiter)
                    -- A waiter at its own cap cannot take the slot, so it holds nobody back.
                    AND (w.owner_cap IS NULL OR COALESCE((SELECT n FROM holding WHERE holding.owner = w.owner), 0) < w.owner_cap)
                    AND (
                        (\(claim.batch) AND NOT w.batch AND (w.burst IS NULL OR (SELECT n FROM run) < w.burst))
                        OR (NOT \(claim.batch) AND w.batch AND w.burst IS NOT NULL AND (SELECT n FROM run) >= \(claim.interactiveBurst))
                        OR (w.batch = \(claim.batch) AND COALESCE((SELECT n FROM holding WHERE holding.owner = w.owner), 0) < (SELECT n FROM mine))
                    )
                )
                ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED
            )
            RETURNING slot
            ), served AS (
                DELETE FROM slot_waiters WHERE ticket = \(claim.waiter) AND EXISTS (SELECT 1 FROM taken) RETURNING backend
            ), counted AS (
                -- The run grows by an interactive take while batch work waits, and ends otherwise.
                INSERT INTO backend_turns (backend, interactive_run)
                SELECT \(claim.backend), CASE WHEN NOT \(claim.batch) AND EXISTS (
                    SELECT 1 FROM slot_waiters AS w WHERE w.backend = \(claim.backend) AND w.batch AND w.lease_until >= gateway_now_ms()
                ) THEN 1 ELSE 0 END
                FROM taken
                ON CONFLICT (backend) DO UPDATE
                SET interactive_run = CASE WHEN EXCLUDED.interactive_run = 0 THEN 0 ELSE backend_turns.interactive_run + 1 END
                RETURNING backend
            )
            -- The waiters behind this one hear of it while another slot is free (the count
            -- is from before the take).
            SELECT slot, (
                SELECT pg_notify(\(Self.channel), 'slot ' || backend)::text FROM served
                WHERE (SELECT COUNT(*) FROM backend_slots WHERE backend = \(claim.backend) AND slot < \(claim.capacity) AND holder IS NULL) > 1
            ) AS notified
            FROM taken
            """
        return try await guarded {
            // A capped owner's claims take turns: each counts the slots the last one took.
            try await rows(take, serializedBy: claim.ownerCap.map { _ in "owner \(claim.owner)" })
        }
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

/// One caller's ask for a slot, and its waiter's row once it waits.
private struct SlotClaim {
    var backend: String
    var capacity: Int
    var job: String?
    var batch: Bool
    var owner: String
    var ownerCap: Int?
    var interactiveBurst: Int
    /// Its waiter's row, once it waits.
    var waiter: String?
}
