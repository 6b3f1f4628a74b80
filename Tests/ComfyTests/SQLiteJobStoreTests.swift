@testable import Comfy
import Foundation
import Logging
import Testing

/// The embedded job store on a real SQLite file.
struct SQLiteJobStoreTests {
    func withStore(_ body: (SQLiteJobStore, String) async throws -> Void) async throws {
        try await withTemporaryFolder("jobstore") { directory in
            let store = try await SQLiteJobStore.open(path: "\(directory)/jobs.sqlite", logger: Logger(label: "test"))
            try await body(store, directory)
            await store.close()
        }
    }

    func job(_ text: String = "x", kind: JobKind = .async, key: String? = nil, webhook: String? = nil, at date: Date = Date()) -> JobRecord {
        JobRecord(
            id: JobRecord.newID(), kind: kind, workflow: ["1": .object(["class_type": .string(text)])], outputNodeID: "1", owner: "10.0.0.1",
            webhookURL: webhook, idempotencyKey: key, createdAt: date
        )
    }

    @Test func aJobReadsBackAsStoredAndSurvivesReopening() async throws {
        try await withTemporaryFolder("jobstore") { directory in
            let record = job("kept")
            let first = try await SQLiteJobStore.open(path: "\(directory)/jobs.sqlite", logger: Logger(label: "test"))
            #expect(try await first.insert(record, requestHash: nil, keyWindow: .seconds(60)) == .created(record))
            #expect(try await first.markRunning(record.id, promptID: "p-1", backend: "http://gpu:8188", at: Date()))
            await first.close()

            let second = try await SQLiteJobStore.open(path: "\(directory)/jobs.sqlite", logger: Logger(label: "test"))
            let stored = try #require(try await second.job(record.id))
            #expect(stored.status == .running)
            #expect(stored.workflow == record.workflow)
            #expect(stored.outputNodeID == "1")
            #expect(stored.promptID == "p-1")
            #expect(stored.backend == "http://gpu:8188")
            #expect(try await second.unfinished().map(\.id) == [record.id])
            await second.close()
        }
    }

    /// `processRuns` counts the processes that began running a job and died with it: its first
    /// submission and each take-up of it running, less each stop that handed it back; a retry
    /// within one process and a queued job's take-up are not counted.
    @Test func processRunsCountTheProcessesThatDiedRunningAJobNotItsRetriesOrAStop() async throws {
        try await withStore { store, _ in
            let (running, queued) = (job("running"), job("queued"))
            for record in [running, queued] { _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60)) }
            func runs() async throws -> [Int] {
                [try await store.job(running.id)?.processRuns ?? -1, try await store.job(queued.id)?.processRuns ?? -1]
            }
            #expect(try await runs() == [0, 0])
            #expect(try await store.markRunning(running.id, promptID: "p-1", backend: "http://gpu:8188", at: Date()))
            #expect(try await store.markRunning(running.id, promptID: "p-2", backend: "http://gpu:8189", at: Date()), "a retry on another backend")
            #expect(try await runs() == [1, 0])
            // The process died: the next start takes both up, and counts the running one.
            let taken = try await store.takeUpUnfinished()
            #expect(taken.map(\.id) == [running.id, queued.id])
            #expect(taken.map(\.processRuns) == [2, 0])
            // That process stops: a stop is no crash.
            try await store.handBack()
            #expect(try await runs() == [1, 0])
            #expect(try await store.takeUpUnfinished().map(\.processRuns) == [2, 0])
            _ = try await store.finish(running.id, status: .completed, result: nil, failure: nil, at: Date())
            try await store.handBack()
            #expect(try await runs() == [2, 0], "a job that ended is handed back by nobody")
        }
    }

    @Test func theOldestUnfinishedJobIsTheOldestQueuedOrRunningOne() async throws {
        try await withStore { store, _ in
            #expect(try await store.oldestUnfinished() == nil)
            let old = job("old", at: Date(timeIntervalSince1970: 1_000))
            let newer = job("newer", at: Date(timeIntervalSince1970: 2_000))
            for record in [old, newer] { _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60)) }
            #expect(try await store.oldestUnfinished() == Date(timeIntervalSince1970: 1_000))
            _ = try await store.finish(old.id, status: .completed, result: nil, failure: nil, at: Date())
            #expect(try await store.oldestUnfinished() == Date(timeIntervalSince1970: 2_000))
        }
    }

    @Test func theOutputFormatAndEveryImageOfABatchReadBack() async throws {
        try await withStore { store, _ in
            var record = job("batch")
            record.outputFormat = OutputFormat(kind: .webp, quality: 70)
            _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60))
            #expect(try await store.job(record.id)?.outputFormat == OutputFormat(kind: .webp, quality: 70))
            let images = (1...3).map { JobResult(url: "/output_images/\($0).webp", filename: "\($0).webp", contentType: "image/webp") }
            let result = JobResult(url: images[0].url, filename: images[0].filename, contentType: "image/webp", others: Array(images.dropFirst()))
            _ = try await store.finish(record.id, status: .completed, result: result, failure: nil, at: Date())
            let stored = try #require(try await store.job(record.id)?.result)
            #expect(stored.all == images)
        }
    }

    @Test func migrationsTakeEachEarlierVersionToTheLatest() async throws {
        try await withStore { store, directory in
            // A store opened on a fresh file has every migration applied, in one transaction each.
            let version = try await store.userVersion()
            #expect(version == JobStoreSchema.latestVersion)
            // Re-opening a database at the latest version changes nothing and keeps its rows.
            let record = job()
            _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60))
            let again = try await SQLiteJobStore.open(path: "\(directory)/jobs.sqlite", logger: Logger(label: "test"))
            #expect(try await again.job(record.id)?.id == record.id)
            await again.close()
        }
        // Every version from the one before: a database left at version n-1 takes migration n.
        for version in 1...JobStoreSchema.latestVersion {
            try await withStore { store, directory in
                let path = "\(directory)/at-\(version - 1).sqlite"
                let old = try await SQLiteJobStore.open(path: path, logger: Logger(label: "test"), upTo: version - 1)
                #expect(try await old.userVersion() == version - 1)
                await old.close()
                let migrated = try await SQLiteJobStore.open(path: path, logger: Logger(label: "test"))
                #expect(try await migrated.userVersion() == JobStoreSchema.latestVersion)
                let record = job()
                _ = try await migrated.insert(record, requestHash: nil, keyWindow: .seconds(60))
                #expect(try await migrated.job(record.id) != nil)
                await migrated.close()
                _ = store
            }
        }
    }

    @Test func aKeyWithTheSameRequestIsTheSameJobAndWithAnotherIsRefused() async throws {
        try await withStore { store, _ in
            let first = job("a", key: "k-1")
            #expect(try await store.insert(first, requestHash: "hash-a", keyWindow: .seconds(60)) == .created(first))
            let retry = try await store.insert(job("a", key: "k-1"), requestHash: "hash-a", keyWindow: .seconds(60))
            #expect(retry.record.id == first.id)
            #expect(retry == .existing(retry.record))
            await #expect(throws: JobStoreError.self) { try await store.insert(job("b", key: "k-1"), requestHash: "hash-b", keyWindow: .seconds(60)) }
            // What the early quota check asks: a replay's key names a stored job, within the window only.
            #expect(try await store.holdsIdempotencyKey("k-1", within: .seconds(60), at: Date()))
            #expect(try await !store.holdsIdempotencyKey("k-1", within: .seconds(60), at: Date().addingTimeInterval(120)))
            #expect(try await !store.holdsIdempotencyKey("k-2", within: .seconds(60), at: Date()))
            // Past its window the key names nothing: a new job.
            let later = job("b", key: "k-1", at: Date().addingTimeInterval(120))
            #expect(try await store.insert(later, requestHash: "hash-b", keyWindow: .seconds(60)) == .created(later))
        }
    }

    @Test func aKeysLimitOfUnfinishedJobsHoldsUnderRacingInserts() async throws {
        try await withStore { store, _ in try await expectUnfinishedLimitHoldsUnderRacingInserts([store]) }
    }

    @Test func noJobOfARevokedKeyIsStored() async throws {
        try await withStore { store, _ in try await expectNoJobOfARevokedKeyIsStored([store]) }
    }

    @Test func dueWebhooksDealTheConnectionsToTheOwnersInTurn() async throws {
        try await withStore { store, _ in
            func add(_ owner: String, _ count: Int) async throws {
                for index in 0..<count {
                    var record = job("\(owner) \(index)", webhook: "https://example.com/hook")
                    record.owner = owner
                    _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60))
                    _ = try await store.finish(record.id, status: .completed, result: nil, failure: nil, at: Date())
                }
            }
            func shares() async throws -> [String: Int] {
                try await store.dueWebhooks(at: Date(), limit: 64, connections: 8, excluding: []).reduce(into: [:]) { $0[$1.owner, default: 0] += 1 }
            }
            try await add("key:a", 10)
            #expect(try await shares() == ["key:a": 8], "alone, every connection")
            try await add("key:b", 1)
            try await add("key:c", 1)
            #expect(try await shares() == ["key:a": 6, "key:b": 1, "key:c": 1], "what b and c do not need is a's")
            try await add("key:b", 9)
            try await add("key:c", 9)
            #expect(try await shares() == ["key:a": 3, "key:b": 3, "key:c": 2], "dealt in turn, the oldest first")
            for owner in 0..<7 { try await add("key:more\(owner)", 1) }
            let many = try await shares()
            #expect(many.values.reduce(0, +) == 8 && many.values.allSatisfy { $0 == 1 }, "past eight owners, one each: \(many)")
        }
    }

    @Test func heldBackWebhooksTakeNoneOfTheConnections() async throws {
        try await withStore { store, _ in
            var ids: [String] = []
            for index in 0..<10 {
                let record = job("held \(index)", webhook: "https://example.com/hook")
                _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60))
                _ = try await store.finish(record.id, status: .completed, result: nil, failure: nil, at: Date())
                ids.append(record.id)
            }
            // The first eight (the oldest) are held back by the sender: the other two go.
            let held = Set(ids.prefix(8))
            let due = try await store.dueWebhooks(at: Date(), limit: 64, connections: 8, excluding: held)
            #expect(Set(due.map(\.id)) == Set(ids.suffix(2)))
            #expect(try await store.dueWebhooks(at: Date(), limit: 64, connections: 8, excluding: []).count == 8)
        }
    }

    @Test func aJobEndsOnceAndItsWebhookBecomesDue() async throws {
        try await withStore { store, _ in
            let record = job(webhook: "https://example.com/hook")
            _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60))
            let result = JobResult(url: "/output_images/a.png", filename: "a.png", contentType: "image/png")
            let final = try #require(try await store.finish(record.id, status: .completed, result: result, failure: nil, at: Date()))
            #expect(final.status == .completed)
            #expect(final.result == result)
            #expect(final.progress == 1)
            #expect(final.webhook.state == .pending)
            #expect(try await store.finish(record.id, status: .failed, result: nil, failure: nil, at: Date()) == nil, "a job ends once")
            #expect(try await store.markRunning(record.id, promptID: "late", backend: "b", at: Date()) == false)

            #expect(try await store.dueWebhooks(at: Date(), limit: 10).map(\.id) == [record.id])
            try await store.recordWebhookAttempt(of: record.id, status: 500, delivered: false, nextAttemptAt: Date().addingTimeInterval(60), at: Date())
            #expect(try await store.dueWebhooks(at: Date(), limit: 10).isEmpty)
            #expect(try await store.nextWebhookDue(after: Date()) != nil)
            // Pending webhooks keep their job past retention.
            #expect(try await store.deleteFinished(before: Date().addingTimeInterval(3600)) == 0)
            try await store.recordWebhookAttempt(of: record.id, status: 200, delivered: true, nextAttemptAt: nil, at: Date())
            let delivered = try #require(try await store.job(record.id))
            #expect(delivered.webhook.state == .delivered)
            #expect(delivered.webhook.attempts == 2)
            #expect(delivered.webhook.lastStatus == 200)
            #expect(try await store.counts().webhooks[.delivered] == 1)
            #expect(try await store.deleteFinished(before: Date().addingTimeInterval(3600)) == 1)
            #expect(try await store.job(record.id) == nil)
        }
    }

    @Test func aKeysJobsAreListedNewestFirstPageByPage() async throws {
        try await withStore { store, _ in try await expectAKeysJobsAreListedNewestFirstPageByPage([store]) }
    }

    @Test func anEndReleasingItsKeyLetsANewJobTakeIt() async throws {
        try await withStore { store, _ in try await expectAnEndReleasingItsKeyLetsANewJobTakeIt([store]) }
    }

    @Test func queuePositionsCountTheQueuedJobsAhead() async throws {
        try await withStore { store, _ in
            let jobs = (0..<3).map { job("\($0)") }
            for record in jobs { _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60)) }
            #expect(try await store.queuePosition(of: jobs[2].id) == 2)
            _ = try await store.markRunning(jobs[0].id, promptID: "p", backend: "b", at: Date())
            #expect(try await store.queuePosition(of: jobs[2].id) == 1)
            #expect(try await store.queuePosition(of: jobs[0].id) == nil)
            #expect(try await store.counts().jobs == [.queued: 2, .running: 1])
        }
    }
}
