@testable import Comfy
import Foundation
import Logging
import Testing

/// The webhook sender against a real SQLite store and a real loopback receiver.
struct WebhookSenderTests {
    /// A sender to loopback receivers (private addresses allowed).
    func makeSender(_ store: any JobStore, _ http: CurlHTTPClient, maxAttempts: Int, retryBase: Duration) throws -> WebhookSender {
        WebhookSender(
            store: store, http: http,
            configuration: .init(
                keyring: WebhookKeyring(gateway: try #require(WebhookSigner(secret: "whsec_" + Data(repeating: 7, count: 24).base64EncodedString())), root: [1, 2, 3]),
                maxAttempts: maxAttempts, retryBase: retryBase, timeout: .seconds(5), allowPrivate: true
            ),
            logger: Logger(label: "test")
        )
    }

    @Test func aDeliveryTheStoreWillNotRecordWaitsItsPauseInsteadOfGoingAgainAtOnce() async throws {
        try await withTemporaryFolder("webhooks") { directory in
            let receiver = try SlowLoopbackServer(answerAfter: .zero)
            defer { receiver.stop() }
            let path = "\(directory)/jobs.sqlite"
            let store = try await SQLiteJobStore.open(path: path, logger: Logger(label: "test"))
            let record = JobRecord(
                id: JobRecord.newID(), kind: .async, workflow: ["1": .object(["class_type": "EmptyImage"])], outputNodeID: "1",
                owner: "10.0.0.1", webhookURL: "\(receiver.url)/hook", idempotencyKey: nil
            )
            _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60))
            _ = try await store.finish(record.id, status: .failed, result: nil, failure: nil, at: Date())
            // The store refuses the write that records an attempt, as a full disk would.
            let other = try await SQLiteDatabase.open(path: path)
            _ = try await other.query(
                "CREATE TRIGGER no_room BEFORE UPDATE OF webhook_attempts ON jobs BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
            let http = CurlHTTPClient(threads: 2)
            let sender = try makeSender(store, http, maxAttempts: 5, retryBase: .seconds(5))
            let sending = Task { await sender.run() }
            // Sent, its attempt refused by the store, and held back for its pause (5 s).
            let first = ContinuousClock.now + .seconds(10)
            while sender.heldBackCount == 0, ContinuousClock.now < first { try await Task.sleep(for: .milliseconds(20)) }
            #expect(sender.heldBackCount == 1)
            // Meanwhile the scans that its end and the pause's timer start do not send it again.
            try await Task.sleep(for: .milliseconds(300))
            #expect(receiver.paths.count == 1, "sent \(receiver.paths.count) times")
            _ = try await other.query("DROP TRIGGER no_room")
            // After the pause it goes again, and this time the store records it.
            let deadline = ContinuousClock.now + .seconds(20)
            while try await store.job(record.id)?.webhook.state != .delivered, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await store.job(record.id)?.webhook.state == .delivered)
            #expect(receiver.paths.count == 2, "sent \(receiver.paths.count) times")
            #expect(try await store.job(record.id)?.webhook.attempts == 1)
            sending.cancel()
            await sending.value
            await other.close()
            try await http.shutdown()
            await store.close()
        }
    }

    @Test func aDeliveryWhoseHostLookupFoundNoPlaceSpendsNoAttemptAndGoesAgainShortly() async throws {
        try await withTemporaryFolder("webhooks-busy") { directory in
            let receiver = try SlowLoopbackServer(answerAfter: .zero)
            defer { receiver.stop() }
            let store = try await SQLiteJobStore.open(path: "\(directory)/jobs.sqlite", logger: Logger(label: "test"))
            // A name, not an address: its check takes a place among the owner's lookups.
            let hook = receiver.url.replacingOccurrences(of: "127.0.0.1", with: "localhost") + "/hook"
            let owner = "203.0.113.77"
            let record = JobRecord(
                id: JobRecord.newID(), kind: .async, workflow: ["1": .object(["class_type": "EmptyImage"])], outputNodeID: "1",
                owner: owner, webhookURL: hook, idempotencyKey: nil
            )
            _ = try await store.insert(record, requestHash: nil, keyWindow: .seconds(60))
            _ = try await store.finish(record.id, status: .failed, result: nil, failure: nil, at: Date())
            // The owner's lookups are all running (its other webhooks, its input URLs).
            let lookups = OutboundURL.lookups
            for _ in 0..<lookups.perOwner { #expect(await lookups.acquire(owner, by: .now + .seconds(60))) }
            let http = CurlHTTPClient(threads: 2)
            let sender = try makeSender(store, http, maxAttempts: 2, retryBase: .seconds(1))
            let sending = Task { await sender.run() }
            // Its check waits for a place (5 s), gives up, and the delivery is held back.
            let first = ContinuousClock.now + .seconds(15)
            while sender.heldBackCount == 0, ContinuousClock.now < first { try await Task.sleep(for: .milliseconds(20)) }
            #expect(sender.heldBackCount == 1)
            #expect(receiver.paths.isEmpty)
            #expect(try await store.job(record.id)?.webhook.attempts == 0, "no attempt spent")
            for _ in 0..<lookups.perOwner { lookups.done(owner) }
            let deadline = ContinuousClock.now + .seconds(20)
            while try await store.job(record.id)?.webhook.state != .delivered, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await store.job(record.id)?.webhook.state == .delivered)
            #expect(try await store.job(record.id)?.webhook.attempts == 1)
            sending.cancel()
            await sending.value
            try await http.shutdown()
            await store.close()
        }
    }
}
