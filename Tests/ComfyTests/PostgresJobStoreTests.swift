@testable import Comfy
import Foundation
import Logging
import PostgresCluster
import PostgresNIO
import Testing

/// The shared job store on a real PostgreSQL server, with several "instances" (stores) on it.
@Suite(.serialized)
struct PostgresJobStoreTests {
    /// A fresh cluster and `count` instances on it, each with a lease of `lease`.
    func withInstances(_ count: Int, lease: Duration = .seconds(1), _ body: ([PostgresJobStore], PostgresCluster) async throws -> Void) async throws {
        let cluster = try PostgresCluster()
        defer { cluster.stop() }
        // Opened at the same moment: the advisory lock lets one of them migrate.
        let stores = try await withThrowingTaskGroup(of: PostgresJobStore.self) { group in
            for _ in 0..<count { group.addTask { try await PostgresJobStore.open(url: try PostgresStoreURL(cluster.url), leaseTimeout: lease, logger: Logger(label: "test")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        do {
            try await body(stores, cluster)
        } catch {
            for store in stores { await store.close() }
            throw error
        }
        for store in stores { await store.close() }
    }

    /// `claims` claims at once, each holding its slot for `holding` once it has it: the most
    /// held at the same moment.
    func peakHeld(
        claims: Int, holding: Duration, _ claim: @escaping @Sendable (Int) async throws -> (PostgresJobStore, BackendSlotTicket)
    ) async throws -> Int {
        let inUse = InUseCounter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<claims {
                group.addTask {
                    let (store, ticket) = try await claim(index)
                    await inUse.enter()
                    try await Task.sleep(for: holding)
                    await inUse.leave()
                    await store.releaseSlot(ticket)
                }
            }
            try await group.waitForAll()
        }
        return await inUse.peak
    }

    func job(
        _ text: String = "x", kind: JobKind = .async, key: String? = nil, webhook: String? = nil, owner: String = "10.0.0.1", at date: Date = Date()
    ) -> JobRecord {
        JobRecord(
            id: JobRecord.newID(), kind: kind, workflow: ["1": .object(["class_type": .string(text)])], outputNodeID: "1", owner: owner,
            webhookURL: webhook, idempotencyKey: key, createdAt: date
        )
    }

    @Test func instancesStartingTogetherMigrateOnceAndSeeEachOthersJobs() async throws {
        try await withInstances(3) { stores, _ in
            for store in stores { #expect(try await store.schemaVersion() == PostgresJobStoreSchema.latestVersion) }
            // Stored to the millisecond.
            var record = job("shared", at: Date(milliseconds: Date().milliseconds))
            record.outputFormat = OutputFormat(stored: "webp:80")!
            _ = try await stores[0].insert(record, requestHash: nil, keyWindow: .seconds(60))
            let read = try #require(try await stores[2].job(record.id))
            #expect(read == record)
            #expect(try await stores[1].queuePosition(of: record.id) == 0)
            #expect(try await stores[1].counts().jobs == [.queued: 1])
        }
    }

    @Test func aDrawingSessionSavedByOneInstanceIsReadWholeByAnotherAndItsResultKept() async throws {
        try await withInstances(2) { stores, _ in
            let image = StoredImage(filename: "a.png", url: "/output_images/a.png", mimeType: "image/png")
            let state = DrawingSessionState(seed: 42, style: "realistic", prompt: "a hill", latestResult: image, owner: "painter")
            await stores[0].saveDrawingSession("s1", state)
            #expect(await stores[1].drawingSession("s1") == state, "its key too: else another key could claim it there")
            #expect(await stores[1].drawingSession("s2") == nil)
            // Output retention on the other instance keeps its result: they may share OUTPUT_DIR.
            await stores[0].saveDrawingSession("s3", DrawingSessionState(seed: 1, style: nil, prompt: nil, latestResult: nil))
            #expect((try? await stores[1].drawingResultFilenames()) == ["a.png"])
        }
    }

    @Test func theConnectionIsEncryptedWhenTheURLAsksAndVerifyFullRefusesAnUnknownCertificate() async throws {
        let cluster = try PostgresCluster(tls: true)
        defer { cluster.stop() }
        func encrypted(_ mode: String) async throws -> Bool {
            let store = try await PostgresJobStore.open(url: try PostgresStoreURL(cluster.url + "?sslmode=\(mode)"), logger: Logger(label: "test"))
            let ssl = try? await store.rows("SELECT ssl::text AS ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").first?.text("ssl")
            await store.close()
            return ssl == "true"
        }
        #expect(try await encrypted("require"))
        #expect(try await !encrypted("disable"))
        // Its certificate is self-signed: checked, it is refused, and the start says why.
        let started = ContinuousClock.now
        do {
            let store = try await PostgresJobStore.open(url: try PostgresStoreURL(cluster.url + "?sslmode=verify-full"), logger: Logger(label: "test"))
            await store.close()
            Issue.record("a certificate nobody vouches for was accepted")
        } catch {
            #expect("\(error)".lowercased().contains("certificate"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(10), "refused at once, not after the start's 30 s")
    }

    @Test func aNewerSchemaIsRefused() async throws {
        try await withInstances(1) { stores, cluster in
            try await stores[0].guarded { try await stores[0].client.query("UPDATE gateway_schema SET version = 99") }
            await #expect(throws: JobStoreError.self) {
                try await PostgresJobStore.open(url: try PostgresStoreURL(cluster.url), logger: Logger(label: "test"))
            }
        }
    }

    @Test func anIdempotencyKeyNamesOneJobAcrossInstances() async throws {
        try await withInstances(2) { stores, _ in
            let first = job("a", key: "k-1")
            #expect(try await stores[0].insert(first, requestHash: "hash-a", keyWindow: .seconds(60)) == .created(first))
            let retry = try await stores[1].insert(job("a", key: "k-1"), requestHash: "hash-a", keyWindow: .seconds(60))
            #expect(retry == .existing(retry.record))
            #expect(retry.record.id == first.id)
            await #expect(throws: JobStoreError.self) { try await stores[1].insert(job("b", key: "k-1"), requestHash: "hash-b", keyWindow: .seconds(60)) }
            // What the early quota check asks: a replay's key names a stored job, within the window only.
            #expect(try await stores[1].holdsIdempotencyKey("k-1", within: .seconds(60), at: Date()))
            #expect(try await !stores[1].holdsIdempotencyKey("k-1", within: .seconds(60), at: Date().addingTimeInterval(120)))
            #expect(try await !stores[1].holdsIdempotencyKey("k-2", within: .seconds(60), at: Date()))
        }
    }

    @Test func aKeysLimitOfUnfinishedJobsHoldsWhenInstancesInsertAtOnce() async throws {
        try await withInstances(2) { stores, _ in try await expectUnfinishedLimitHoldsUnderRacingInserts(stores) }
    }

    @Test func aKeysJobsAreListedNewestFirstPageByPageOnEveryInstanceWithTheirIndexBuiltAfterTheStart() async throws {
        try await withInstances(2) { stores, _ in
            try await expectAKeysJobsAreListedNewestFirstPageByPage(stores)
            // Built concurrently by one of the two once they started, not in a migration's transaction.
            var valid: [String] = []
            for _ in 0..<100 {
                valid = try await stores[0].rows(
                    "SELECT i.indisvalid::text AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'jobs_by_key_seq'"
                ).compactMap { $0.text("valid") }
                if valid == ["true"] { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(valid == ["true"])
        }
    }

    @Test func anEndReleasingItsKeyLetsANewJobTakeItOnEveryInstance() async throws {
        try await withInstances(2) { stores, _ in try await expectAnEndReleasingItsKeyLetsANewJobTakeIt(stores) }
    }

    @Test func noJobOfARevokedKeyIsStoredByAnyInstance() async throws {
        try await withInstances(2) { stores, _ in try await expectNoJobOfARevokedKeyIsStored(stores) }
    }

    @Test func anExpiredLeaseIsTakenOverOnceAndTheOldHolderIsFencedOut() async throws {
        try await withInstances(3) { stores, _ in
            let (paused, taker, other) = (stores[0], stores[1], stores[2])
            let record = job(webhook: "https://example.com/hook")
            _ = try await paused.insert(record, requestHash: nil, keyWindow: .seconds(60))
            #expect(try await paused.markRunning(record.id, promptID: "p-1", backend: "http://b1", at: Date()))
            // Renewed, the lease holds.
            #expect(try await paused.renewLeases().isEmpty)
            #expect(try await taker.takeOverExpired(limit: 10).isEmpty)
            try await Task.sleep(for: .milliseconds(1300))
            async let first = taker.takeOverExpired(limit: 10)
            async let second = other.takeOverExpired(limit: 10)
            let taken = try await first + second
            #expect(taken.map(\.id) == [record.id], "one instance takes it")
            #expect(taken.first?.promptID == "p-1")
            let winner = taker.generation(of: record.id) != nil ? taker : other

            // The paused instance wakes up: it hears that it lost the job, and its writes are refused.
            #expect(try await paused.renewLeases() == [record.id])
            #expect(try await paused.renewLeases().isEmpty, "a loss is told once")
            #expect(try await paused.markRunning(record.id, promptID: "p-2", backend: "http://b2", at: Date()) == false)
            let result = JobResult(url: "/output_images/a.png", filename: "a.png", contentType: "image/png")
            #expect(try await paused.finish(record.id, status: .completed, result: result, failure: nil, at: Date()) == nil)

            // The new holder resubmits and ends it, once; its webhook becomes due once.
            #expect(try await winner.markRunning(record.id, promptID: "p-3", backend: "http://b1", at: Date()))
            let final = try #require(try await winner.finish(record.id, status: .completed, result: result, failure: nil, at: Date()))
            #expect(final.promptID == "p-3")
            #expect(final.webhook.state == .pending)
            #expect(try await winner.finish(record.id, status: .failed, result: nil, failure: nil, at: Date()) == nil)
            #expect(try await taker.takeOverExpired(limit: 10).isEmpty, "a final job has no lease to take")
        }
    }

    /// A running job's `processRuns` counts its first submission and each take-over; a stop that
    /// hands the job back does not count, nor does a queued job's take-over.
    @Test func aTakeOverCountsARunningJobsProcessRunsAndAStopThatHandsItBackDoesNot() async throws {
        try await withInstances(3) { stores, _ in
            let (stopping, taker, last) = (stores[0], stores[1], stores[2])
            let (running, queued) = (job("running"), job("queued"))
            for record in [running, queued] { _ = try await stopping.insert(record, requestHash: nil, keyWindow: .seconds(60)) }
            #expect(try await stopping.markRunning(running.id, promptID: "p-1", backend: "http://b1", at: Date()))
            #expect(try await stopping.markRunning(running.id, promptID: "p-2", backend: "http://b2", at: Date()), "a retry on another backend")
            #expect(try await stopping.job(running.id)?.processRuns == 1)
            // A stop: its leases run out at once, and the jobs are taken over with nothing counted.
            try await stopping.handBack()
            let handedOver = try await taker.takeOverExpired(limit: 10)
            #expect(handedOver.map(\.id) == [running.id, queued.id])
            #expect(handedOver.map(\.processRuns) == [1, 0])
            // The taker goes silent: the next take-over counts it.
            try await Task.sleep(for: .milliseconds(1300))
            let taken = try await last.takeOverExpired(limit: 10)
            #expect(taken.map(\.processRuns) == [2, 0])
            #expect(Set(try await taker.renewLeases()) == [running.id, queued.id])
            try await taker.handBack()
            #expect(try await last.job(running.id)?.processRuns == 2, "a stop hands back only what the instance still holds")
            // The taker lives on, so its loss is no death: it acquits the jobs.
            try await taker.acquit([running.id, queued.id])
            #expect(try await last.job(running.id)?.processRuns == 1)
            #expect(try await last.job(queued.id)?.processRuns == 0, "never below nothing")
            // An instance that let a job go (its end could not be stored) and takes it up again lived.
            last.forget(running.id)
            try await Task.sleep(for: .milliseconds(1300))
            #expect(try await last.takeOverExpired(limit: 10).map(\.processRuns) == [1, 0])
        }
    }

    @Test func aDueWebhookIsClaimedByOneInstanceForALeaseThatItsSendingRenews() async throws {
        try await withInstances(2) { stores, _ in
            let (sending, dead) = (stores[0], stores[1])
            var ids: [String] = []
            for index in 0..<20 {
                let record = job("\(index)", webhook: "https://example.com/hook")
                _ = try await stores[index % 2].insert(record, requestHash: nil, keyWindow: .seconds(60))
                _ = try await stores[index % 2].finish(record.id, status: .completed, result: nil, failure: nil, at: Date())
                ids.append(record.id)
            }
            async let a = sending.dueWebhooks(at: Date(), limit: 15)
            async let b = dead.dueWebhooks(at: Date(), limit: 15)
            let (mine, theirs) = try await (a.map(\.id), b.map(\.id))
            #expect((mine + theirs).sorted() == ids.sorted(), "every webhook is claimed, each by one instance")
            #expect(try await sending.dueWebhooks(at: Date(), limit: 50).isEmpty)
            let claimedUntil = try #require(sending.webhookClaimHeld(mine[0]))
            #expect(sending.webhookClaimHeld(theirs[0]) == nil)

            // One instance goes on sending (its claims are renewed), the other dies: past the
            // lease, only the dead one's webhooks come due again.
            for _ in 0..<5 {
                try await Task.sleep(for: .milliseconds(300))
                _ = try await sending.renewLeases()
            }
            // A sender whose lookups took long may still send what its renewals kept; a silent one may not.
            #expect(try #require(sending.webhookClaimHeld(mine[0])) >= claimedUntil + .milliseconds(1200))
            #expect(try #require(dead.webhookClaimHeld(theirs[0])) < .now)
            #expect(try await sending.dueWebhooks(at: Date(), limit: 50).map(\.id).sorted() == theirs.sorted())
            // Claimed by the other meanwhile: the dead one, awake, holds no claim on it.
            _ = try await dead.renewLeases()
            #expect(dead.webhookClaimHeld(theirs[0]) == nil)

            // The dead one wakes: what it records for a webhook it lost is refused.
            let lost = try #require(theirs.first)
            try await dead.recordWebhookAttempt(of: lost, status: 500, delivered: false, nextAttemptAt: nil, at: Date())
            #expect(try await sending.job(lost)?.webhook.state == .pending)
            try await sending.recordWebhookAttempt(of: lost, status: 200, delivered: true, nextAttemptAt: nil, at: Date())
            #expect(try await sending.job(lost)?.webhook.state == .delivered)
        }
    }

    @Test func anOwnerHasEveryConnectionAloneAndTheyAreDealtInTurnBesideOthers() async throws {
        try await withInstances(2, lease: .seconds(5)) { stores, _ in
            var owners: [String: String] = [:]
            func add(_ owner: String, _ count: Int) async throws {
                for index in 0..<count {
                    let record = job("\(owner) \(index)", webhook: "https://example.com/hook", owner: owner)
                    _ = try await stores[0].insert(record, requestHash: nil, keyWindow: .seconds(60))
                    _ = try await stores[0].finish(record.id, status: .completed, result: nil, failure: nil, at: Date())
                    owners[record.id] = owner
                }
            }
            func claim(_ store: PostgresJobStore) async throws -> [JobRecord] {
                try await store.dueWebhooks(at: Date(), limit: 50, connections: 8, excluding: [])
            }
            try await add("key:noisy", 10)
            let alone = try await claim(stores[0])
            #expect(alone.count == 8, "alone, an owner has every connection")
            try await add("key:quiet", 2)
            #expect(
                try await claim(stores[0]).map { owners[$0.id] ?? "?" } == ["key:quiet", "key:quiet"],
                "dealt in turn: quiet's first two places come before noisy's third, and take the first connections free"
            )
            for sent in alone.prefix(4) {
                try await stores[0].recordWebhookAttempt(of: sent.id, status: 200, delivered: true, nextAttemptAt: nil, at: Date())
            }
            #expect(try await claim(stores[0]).map { owners[$0.id] ?? "?" } == ["key:noisy", "key:noisy"], "six under way: the places left are noisy's")
            // Another instance counts only what it sends itself: its connections are its own.
            try await add("key:noisy", 1)
            #expect(try await claim(stores[1]).map { owners[$0.id] ?? "?" } == ["key:noisy"])
            // Those under way come first in their owner's line and in each round: the 8 places here
            // are noisy, quiet, third, noisy, quiet, third, noisy, third. So the third owner's 3
            // go; noisy (6 under way) and quiet (2, and 3 due) wait.
            try await add("key:third", 3)
            try await add("key:quiet", 3)
            #expect(try await claim(stores[0]).map { owners[$0.id] ?? "?" } == ["key:third", "key:third", "key:third"])
        }
    }

    @Test func aHeldBackWebhookIsNotClaimedAndTakesNoPlace() async throws {
        try await withInstances(1, lease: .seconds(5)) { stores, _ in
            var ids: [String] = []
            for index in 0..<9 {
                let record = job("held \(index)", webhook: "https://example.com/hook")
                _ = try await stores[0].insert(record, requestHash: nil, keyWindow: .seconds(60))
                _ = try await stores[0].finish(record.id, status: .completed, result: nil, failure: nil, at: Date())
                ids.append(record.id)
            }
            let claimed = try await stores[0].dueWebhooks(at: Date(), limit: 50, connections: 8, excluding: [ids[0]])
            #expect(claimed.count == 8)
            #expect(!claimed.map(\.id).contains(ids[0]), "held back: not claimed")
            // Still due, unclaimed: once the others are sent and it is no longer held back, it is claimed.
            for sent in claimed {
                try await stores[0].recordWebhookAttempt(of: sent.id, status: 200, delivered: true, nextAttemptAt: nil, at: Date())
            }
            #expect(try await stores[0].dueWebhooks(at: Date(), limit: 50, connections: 8, excluding: []).map(\.id) == [ids[0]])
        }
    }

    @Test func webhookClaimsAndRetriesKeepTheDatabasesClockNotAnInstancesOwn() async throws {
        try await withInstances(2, lease: .seconds(5)) { stores, _ in
            let (sending, ahead) = (stores[0], stores[1])
            let record = job(webhook: "https://example.com/hook")
            _ = try await sending.insert(record, requestHash: nil, keyWindow: .seconds(60))
            _ = try await sending.finish(record.id, status: .completed, result: nil, failure: nil, at: Date())
            #expect(try await sending.dueWebhooks(at: Date(), limit: 10).map(\.id) == [record.id])
            // An instance whose clock is a minute ahead finds it still claimed, for about the lease.
            let aMinuteAhead = Date().addingTimeInterval(60)
            #expect(try await ahead.dueWebhooks(at: aMinuteAhead, limit: 10).isEmpty)
            let claimEnds = try #require(try await ahead.nextWebhookDue(after: aMinuteAhead)).timeIntervalSince(aMinuteAhead)
            #expect(claimEnds > 3 && claimEnds <= 5, "\(claimEnds) s")
            // A failed attempt's pause of 30 s, chosen by an instance whose clock is behind, is
            // 30 s on the database's clock.
            let anHourBehind = Date().addingTimeInterval(-3600)
            try await sending.recordWebhookAttempt(
                of: record.id, status: 500, delivered: false, nextAttemptAt: anHourBehind.addingTimeInterval(30), at: anHourBehind
            )
            #expect(try await ahead.dueWebhooks(at: aMinuteAhead, limit: 10).isEmpty)
            let retryIn = try #require(try await ahead.nextWebhookDue(after: Date())).timeIntervalSinceNow
            #expect(retryIn > 28 && retryIn <= 30, "\(retryIn) s")
        }
    }

    @Test func backendSlotsNeverExceedTheCapacityOfAllInstancesTogether() async throws {
        try await withInstances(2) { stores, _ in
            let peak = try await peakHeld(claims: 24, holding: .milliseconds(20)) { index in
                let store = stores[index % 2]
                return (store, try await store.acquireSlot(backend: "http://b1", capacity: 3, job: nil, deadline: .now + .seconds(30)))
            }
            #expect(peak == 3)
            #expect(try await stores[0].slotsInUse() == [:])
        }
    }

    @Test func anOwnersCapHoldsWhenInstancesClaimItsLastSlotAtOnce() async throws {
        try await withInstances(2) { stores, _ in
            // Six slots free and a cap of two: claims that look at the same moment must not
            // each see one held and both take a second.
            let peak = try await peakHeld(claims: 40, holding: .milliseconds(50)) { index in
                let store = stores[index % 2]
                let ticket = try await store.acquireSlot(
                    backend: index % 4 < 2 ? "http://b1" : "http://b2", capacity: 3, job: nil, priority: .batch, owner: "capped",
                    ownerMaxRunning: 2, deadline: .now + .seconds(30)
                )
                return (store, ticket)
            }
            #expect(peak == 2, "at most the cap at once: \(peak)")
            #expect(try await stores[0].slotsInUse() == [:])
        }
    }

    @Test func aBatchJobLetsAnInteractiveOneOfAnotherInstanceTakeTheFreedSlotFirst() async throws {
        try await withInstances(2, lease: .seconds(5)) { stores, _ in
            let (batchSide, interactiveSide) = (stores[0], stores[1])
            let held = try await batchSide.acquireSlot(backend: "http://b1", capacity: 1, job: nil, deadline: .now + .seconds(5))
            let order = OrderLog()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    let ticket = try await interactiveSide.acquireSlot(backend: "http://b1", capacity: 1, job: nil, priority: .interactive, deadline: .now + .seconds(20))
                    await order.append("interactive")
                    try await Task.sleep(for: .milliseconds(200))
                    await interactiveSide.releaseSlot(ticket)
                }
                // The interactive one is waiting before the batch one asks.
                try await Task.sleep(for: .milliseconds(300))
                group.addTask {
                    let ticket = try await batchSide.acquireSlot(backend: "http://b1", capacity: 1, job: nil, priority: .batch, deadline: .now + .seconds(20))
                    await order.append("batch")
                    await batchSide.releaseSlot(ticket)
                }
                try await Task.sleep(for: .milliseconds(300))
                await batchSide.releaseSlot(held)
                try await group.waitForAll()
            }
            #expect(await order.entries == ["interactive", "batch"])
        }
    }

    /// Anonymous painters on one instance must not stop every keyed job of another: after
    /// `interactiveBurst` interactive takes in a row while batch work waits, the batch job goes.
    @Test func interactiveWorkOfAnotherInstanceGoesFirstOnlyForItsBurstWhileBatchWorkWaits() async throws {
        try await withInstances(2, lease: .seconds(5)) { stores, _ in
            let (batchSide, interactiveSide) = (stores[0], stores[1])
            let held = try await batchSide.acquireSlot(backend: "http://b1", capacity: 1, job: nil, deadline: .now + .seconds(5))
            let order = OrderLog()
            func claim(_ store: PostgresJobStore, _ priority: JobPriority, _ name: String) async throws {
                let ticket = try await store.acquireSlot(
                    backend: "http://b1", capacity: 1, job: nil, priority: priority, owner: name, ownerMaxRunning: nil, interactiveBurst: 2,
                    deadline: .now + .seconds(20)
                )
                await order.append(priority == .interactive ? "interactive" : "batch")
                try await Task.sleep(for: .milliseconds(100))
                await store.releaseSlot(ticket)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for painter in 0..<4 { group.addTask { try await claim(interactiveSide, .interactive, "painter-\(painter)") } }
                // The painters wait before the batch job asks.
                try await Task.sleep(for: .milliseconds(300))
                group.addTask { try await claim(batchSide, .batch, "key:studio") }
                try await Task.sleep(for: .milliseconds(300))
                await batchSide.releaseSlot(held)
                try await group.waitForAll()
            }
            #expect(await order.entries == ["interactive", "interactive", "batch", "interactive", "interactive"])
        }
    }

    /// Instances configured apart (a burst of 1 on one, 4 on the other) go by the interactive
    /// side's burst both ways: neither waits for the other's waiter while the slot stays free.
    @Test func instancesWithDifferentBurstsDoNotWaitForEachOther() async throws {
        // Waiters' rows outlive the test (nothing renews them here, and a minute is longer than the claims' deadlines).
        try await withInstances(2, lease: .seconds(60)) { stores, _ in
            let (painting, batchSide) = (stores[0], stores[1])
            let held = try await batchSide.acquireSlot(backend: "http://b1", capacity: 1, job: nil, deadline: .now + .seconds(5))
            let order = OrderLog()
            func claim(_ store: PostgresJobStore, _ priority: JobPriority, burst: Int) async throws {
                let ticket = try await store.acquireSlot(
                    backend: "http://b1", capacity: 1, job: nil, priority: priority, owner: "\(priority)", ownerMaxRunning: nil,
                    interactiveBurst: burst, deadline: .now + .seconds(20)
                )
                await order.append(priority == .interactive ? "interactive" : "batch")
                try await Task.sleep(for: .milliseconds(100))
                await store.releaseSlot(ticket)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await claim(batchSide, .batch, burst: 4) }
                try await Task.sleep(for: .milliseconds(300))
                for _ in 0..<2 { group.addTask { try await claim(painting, .interactive, burst: 1) } }
                try await Task.sleep(for: .milliseconds(300))
                // Waiting for each other, the claims would run out their deadlines and throw here.
                await batchSide.releaseSlot(held)
                try await group.waitForAll()
            }
            #expect(await order.entries == ["interactive", "batch", "interactive"])
        }
    }

    /// A painter at its cap of running prompts cannot take the free slot, so it does not hold
    /// batch work back from it either.
    @Test func anInteractiveWaiterAtItsCapDoesNotHoldBatchWorkBack() async throws {
        // Waiters' rows outlive the test (nothing renews them here, and a minute is longer than the claims' deadlines).
        try await withInstances(2, lease: .seconds(60)) { stores, _ in
            let (painting, batchSide) = (stores[0], stores[1])
            func paint(_ backend: String) async throws -> BackendSlotTicket {
                try await painting.acquireSlot(
                    backend: backend, capacity: 1, job: nil, priority: .interactive, owner: "painter", ownerMaxRunning: 1, interactiveBurst: 4,
                    deadline: .now + .seconds(20)
                )
            }
            let elsewhere = try await paint("http://b2")
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await painting.releaseSlot(try await paint("http://b1")) }
                try await Task.sleep(for: .milliseconds(300))
                // Held back, it would wait out its deadline and throw.
                let batch = try await batchSide.acquireSlot(backend: "http://b1", capacity: 1, job: nil, priority: .batch, deadline: .now + .seconds(5))
                await batchSide.releaseSlot(batch)
                await painting.releaseSlot(elsewhere)
                try await group.waitForAll()
            }
        }
    }

    @Test func ownersTakeTurnsForAFreedSlotAcrossInstancesAndAnOwnersCapCountsEveryBackend() async throws {
        try await withInstances(2, lease: .seconds(5)) { stores, _ in
            let (a, b) = (stores[0], stores[1])
            func take(_ store: PostgresJobStore, _ backend: String, capacity: Int, owner: String, cap: Int? = nil) async throws -> BackendSlotTicket {
                try await store.acquireSlot(backend: backend, capacity: capacity, job: nil, priority: .batch, owner: owner, ownerMaxRunning: cap, deadline: .now + .seconds(20))
            }
            // Turns: big already runs one prompt elsewhere, so small, who asks later on the other
            // instance, gets the freed slot first.
            let elsewhere = try await take(a, "http://b2", capacity: 3, owner: "big")
            let held = try await take(a, "http://b1", capacity: 1, owner: "big")
            let order = OrderLog()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    let ticket = try await take(a, "http://b1", capacity: 1, owner: "big")
                    await order.append("big")
                    await a.releaseSlot(ticket)
                }
                try await Task.sleep(for: .milliseconds(300))
                group.addTask {
                    let ticket = try await take(b, "http://b1", capacity: 1, owner: "small")
                    await order.append("small")
                    try await Task.sleep(for: .milliseconds(200))
                    await b.releaseSlot(ticket)
                }
                try await Task.sleep(for: .milliseconds(300))
                await a.releaseSlot(held)
                try await group.waitForAll()
            }
            #expect(await order.entries == ["small", "big"])
            await a.releaseSlot(elsewhere)

            // Caps: capped (at most 1) runs one on b2, so it waits for b1 although b1 is free,
            // and while it waits at its cap, other (who holds more) is not held back by it.
            let capped = try await take(a, "http://b2", capacity: 3, owner: "capped", cap: 1)
            let others = [try await take(b, "http://b2", capacity: 3, owner: "other"), try await take(b, "http://b2", capacity: 3, owner: "other")]
            let second = OrderLog()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    let ticket = try await take(a, "http://b1", capacity: 1, owner: "capped", cap: 1)
                    await second.append("capped")
                    await a.releaseSlot(ticket)
                }
                try await Task.sleep(for: .milliseconds(300))
                let ticket = try await take(b, "http://b1", capacity: 1, owner: "other")
                await second.append("other")
                await a.releaseSlot(capped)
                try await Task.sleep(for: .milliseconds(300))
                #expect(await second.entries == ["other"], "capped still waits: b1 is other's")
                await b.releaseSlot(ticket)
                try await group.waitForAll()
            }
            #expect(await second.entries == ["other", "capped"])
            for ticket in others { await b.releaseSlot(ticket) }
            #expect(try await a.slotsInUse() == [:])
        }
    }

    @Test func aDeadInstancesSlotIsFreeAfterItsLeaseUnlessItsJobIsUnfinishedAndATakeOverMovesOnlyARunningPromptsSlot() async throws {
        try await withInstances(2, lease: .seconds(1)) { stores, _ in
            let (dead, alive) = (stores[0], stores[1])
            let (queued, running) = (job(), job())
            for record in [queued, running] { _ = try await dead.insert(record, requestHash: nil, keyWindow: .seconds(60)) }
            // It had taken slots for both jobs and marked one running; a third slot was jobless.
            _ = try await dead.acquireSlot(backend: "http://b1", capacity: 3, job: queued.id, deadline: .now + .seconds(1))
            _ = try await dead.acquireSlot(backend: "http://b1", capacity: 3, job: running.id, deadline: .now + .seconds(1))
            #expect(try await dead.markRunning(running.id, promptID: "p1", backend: "http://b1", at: Date()))
            _ = try await dead.acquireSlot(backend: "http://b1", capacity: 3, job: nil, deadline: .now + .seconds(1))
            try await Task.sleep(for: .milliseconds(1300))
            // The jobless slot is free again; the two whose jobs are unfinished are not.
            let free = try await alive.acquireSlot(backend: "http://b1", capacity: 3, job: nil, deadline: .now + .seconds(1))
            await #expect(throws: ComfyError.self) {
                try await alive.acquireSlot(backend: "http://b1", capacity: 3, job: nil, deadline: .now + .milliseconds(300))
            }
            // Taking the jobs over moves the running prompt's slot along: the new holder adopts it
            // and gives it back. The queued job starts afresh with a slot of its own: the one it
            // held is free (moved, it would be renewed for as long as the new holder lived).
            #expect(try await alive.takeOverExpired(limit: 10).map(\.id) == [queued.id, running.id])
            #expect(await alive.adoptSlot(of: queued.id) == nil)
            let adopted = try #require(await alive.adoptSlot(of: running.id))
            #expect(try await alive.slotsInUse() == ["http://b1": 2])
            let fresh = try await alive.acquireSlot(backend: "http://b1", capacity: 3, job: queued.id, deadline: .now + .seconds(1))
            for ticket in [fresh, adopted, free] { await alive.releaseSlot(ticket) }
            #expect(try await alive.slotsInUse() == [:])
        }
    }

    @Test func aSlotTakenOverButNeverAdoptedIsNotRenewedAndIsFreeOnceItsJobEnds() async throws {
        try await withInstances(2, lease: .seconds(1)) { stores, _ in
            let (dead, alive) = (stores[0], stores[1])
            let record = job()
            _ = try await dead.insert(record, requestHash: nil, keyWindow: .seconds(60))
            _ = try await dead.acquireSlot(backend: "http://b1", capacity: 1, job: record.id, deadline: .now + .seconds(1))
            #expect(try await dead.markRunning(record.id, promptID: "p1", backend: "http://b1", at: Date()))
            try await Task.sleep(for: .milliseconds(1300))
            #expect(try await alive.takeOverExpired(limit: 10).map(\.id) == [record.id])
            // Its run here never comes as far as adopting the slot (cancelled, or its inputs could
            // not be read): the slot is not renewed, and counts only while its job is unfinished.
            for _ in 0..<3 {
                _ = try await alive.renewLeases()
                try await Task.sleep(for: .milliseconds(450))
            }
            #expect(try await alive.slotsInUse() == [:])
            await #expect(throws: ComfyError.self) {
                try await alive.acquireSlot(backend: "http://b1", capacity: 1, job: nil, deadline: .now + .milliseconds(300))
            }
            _ = try await alive.finish(record.id, status: .failed, result: nil, failure: nil, gpuMilliseconds: nil, imageBytes: nil, releasingKey: false, at: Date())
            let free = try await alive.acquireSlot(backend: "http://b1", capacity: 1, job: nil, deadline: .now + .seconds(1))
            await alive.releaseSlot(free)
        }
    }

    @Test func aJobInsertTheCallerIsToldFailedIsRolledBackNotLeftToLandLater() async throws {
        try await withInstances(2) { stores, _ in
            // Another session holds the table: the insert waits past the call's 5 s.
            let (locked, lockHeld) = AsyncStream.makeStream(of: Void.self)
            let holder = Task {
                try await stores[1].client.withTransaction(logger: Logger(label: "test")) { connection in
                    _ = try await connection.query("LOCK TABLE jobs IN EXCLUSIVE MODE", logger: Logger(label: "test")).collect()
                    lockHeld.yield()
                    try await Task.sleep(for: .seconds(7))
                }
            }
            for await _ in locked { break }
            let record = job()
            await #expect(throws: JobStoreError.self) { _ = try await stores[0].insert(record, requestHash: nil, keyWindow: .seconds(60)) }
            _ = try? await holder.value
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await stores[1].job(record.id) == nil, "told it failed, it was not stored")
        }
    }

    @Test func aTransactionLeftOpenByAnInstanceThatWentSilentEndsWithinALeaseAndHoldsUpNoTakeOver() async throws {
        try await withInstances(2) { stores, _ in
            let (silent, taker) = (stores[0], stores[1])
            let record = job()
            _ = try await silent.insert(record, requestHash: nil, keyWindow: .seconds(60))
            _ = try await silent.acquireSlot(backend: "http://b1", capacity: 2, job: record.id, deadline: .now + .seconds(1))
            #expect(try await silent.markRunning(record.id, promptID: "p1", backend: "http://b1", at: Date()))
            // Its network goes while a transaction of its holds the job's slot locked: the server
            // waits for a next statement that never comes.
            let (locked, lockHeld) = AsyncStream.makeStream(of: Void.self)
            let stuck = Task {
                try await silent.client.withTransaction(logger: Logger(label: "test")) { connection in
                    try await silent.startTransaction(on: connection, serializedBy: "test")
                    _ = try await connection.query("SELECT * FROM backend_slots WHERE job_id = \(record.id) FOR UPDATE", logger: Logger(label: "test")).collect()
                    lockHeld.yield()
                    try await Task.sleep(for: .seconds(60))
                }
            }
            defer { stuck.cancel() }
            for await _ in locked { break }
            try await Task.sleep(for: .milliseconds(1300))
            // Its lease ran out, and so did the transaction: taking the job over moves its slot
            // along, which waited for that lock for as long as the transaction lived.
            #expect(try await taker.takeOverExpired(limit: 10).map(\.id) == [record.id])
            #expect(await taker.adoptSlot(of: record.id) != nil)
        }
    }

    @Test func anOwnersPromptsStillOnComfyUICountTowardItsCapAfterTheirInstanceDied() async throws {
        try await withInstances(2, lease: .seconds(1)) { stores, _ in
            let (dead, alive) = (stores[0], stores[1])
            // The dead instance ran two of capped's jobs (cap 2) when it stopped renewing.
            for _ in 0..<2 {
                let record = job()
                _ = try await dead.insert(record, requestHash: nil, keyWindow: .seconds(60))
                _ = try await dead.acquireSlot(
                    backend: "http://b1", capacity: 4, job: record.id, priority: .batch, owner: "capped", ownerMaxRunning: 2, deadline: .now + .seconds(1)
                )
            }
            try await Task.sleep(for: .milliseconds(1300))
            // Their prompts still run: capped gets no third slot, though two are free.
            await #expect(throws: ComfyError.self) {
                try await alive.acquireSlot(
                    backend: "http://b1", capacity: 4, job: nil, priority: .batch, owner: "capped", ownerMaxRunning: 2, deadline: .now + .milliseconds(300)
                )
            }
            let other = try await alive.acquireSlot(backend: "http://b1", capacity: 4, job: nil, priority: .batch, owner: "other", deadline: .now + .seconds(1))
            await alive.releaseSlot(other)
        }
    }

    @Test func anInstanceHearsOfTheOthersEndsAndProgressButNotOfItsOwn() async throws {
        try await withInstances(2) { stores, _ in
            let changes = stores[1].changes()
            var iterator = changes.makeAsyncIterator()
            let record = job()
            _ = try await stores[0].insert(record, requestHash: nil, keyWindow: .seconds(60))
            #expect(try await stores[0].markRunning(record.id, promptID: "p", backend: "http://b1", at: Date()))
            await stores[0].announceProgress(of: record.id, 0.5)
            _ = try await stores[0].finish(record.id, status: .completed, result: nil, failure: nil, at: Date())
            var seen: [JobStoreChange] = []
            while seen.count < 3, let change = await iterator.next() {
                if change != .resync { seen.append(change) }
            }
            #expect(seen == [.running(record.id), .progress(record.id, 0.5), .ended(record.id)])
        }
    }

    @Test func aDatabaseThatIsDownAnswersUnavailableAndTheStoreRecoversWhenItIsBack() async throws {
        try await withInstances(1) { stores, cluster in
            let store = stores[0]
            let before = job("before")
            _ = try await store.insert(before, requestHash: nil, keyWindow: .seconds(60))
            try cluster.kill()
            // Many calls at once while it is down, each given up after its timeout.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        await #expect(throws: JobStoreError.self) { try await store.insert(self.job("during"), requestHash: nil, keyWindow: .seconds(60)) }
                    }
                }
                try await group.waitForAll()
            }
            await #expect(throws: JobStoreError.self) { try await store.job(before.id) }
            try cluster.restart()
            var read: JobRecord?
            // The client's pool makes connections again with a backoff of its own.
            var lastError: (any Error)?
            for _ in 0..<300 where read == nil {
                do { read = try await store.job(before.id) } catch { lastError = error }
                if read == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(read?.id == before.id, "an accepted job outlives the outage (last error: \(String(describing: lastError)))")
            let after = job("after")
            #expect(try await store.insert(after, requestHash: nil, keyWindow: .seconds(60)) == .created(after))
        }
    }
}

actor OrderLog {
    private(set) var entries: [String] = []
    func append(_ entry: String) { entries.append(entry) }
}

actor InUseCounter {
    private(set) var now = 0
    private(set) var peak = 0
    func enter() {
        now += 1
        peak = max(peak, now)
    }
    func leave() { now -= 1 }
}
