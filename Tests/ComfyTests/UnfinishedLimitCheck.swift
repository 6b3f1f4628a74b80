@testable import Comfy
import Foundation
import Testing

/// What both job stores promise of a key's limit of unfinished jobs: inserts that race (on one
/// store or on several over one database) store exactly the limit, a replay of a stored job
/// is not refused by it, and a finished job makes room.
func expectUnfinishedLimitHoldsUnderRacingInserts(_ stores: [any JobStore]) async throws {
    func job(key name: String, idempotencyKey: String? = nil) -> JobRecord {
        JobRecord(
            id: JobRecord.newID(), kind: .async, workflow: ["1": .object(["class_type": .string("x")])], outputNodeID: "1", owner: "10.0.0.1",
            keyName: name, idempotencyKey: idempotencyKey
        )
    }
    let outcomes = try await withThrowingTaskGroup(of: JobInsertion?.self) { group in
        for index in 0..<24 {
            group.addTask {
                do {
                    return try await stores[index % stores.count].insert(
                        job(key: "limited", idempotencyKey: "limited-\(index)"), requestHash: "h\(index)", keyWindow: .seconds(60), unfinishedLimit: 3
                    )
                } catch let error as JobStoreError where error.kind == .unfinishedLimitReached {
                    #expect(error.message == "key limited has 3 jobs queued or running, its limit; try again when one ends")
                    return nil
                }
            }
        }
        return try await group.reduce(into: []) { $0.append($1) }
    }
    let created = outcomes.compactMap { $0 }
    #expect(created.count == 3, "exactly the limit stored of 24 racing inserts")
    #expect(try await stores[0].unfinishedJobCount(key: "limited") == 3)

    // At the limit: a replay of a stored job is that job; another key is not held back.
    let stored = try #require(created.first?.record)
    let index = try #require(stored.idempotencyKey?.split(separator: "-").last.map(String.init))
    let replay = try await stores[stores.count - 1].insert(
        job(key: "limited", idempotencyKey: stored.idempotencyKey), requestHash: "h\(index)", keyWindow: .seconds(60), unfinishedLimit: 3
    )
    #expect(replay == .existing(replay.record) && replay.record.id == stored.id)
    let other = job(key: "other")
    #expect(try await stores[0].insert(other, requestHash: nil, keyWindow: .seconds(60), unfinishedLimit: 3) == .created(other))

    // A finished job makes room for one more.
    _ = try await stores[0].finish(stored.id, status: .cancelled, result: nil, failure: nil, at: Date())
    let next = job(key: "limited")
    #expect(try await stores[stores.count - 1].insert(next, requestHash: nil, keyWindow: .seconds(60), unfinishedLimit: 3) == .created(next))
    await #expect(throws: JobStoreError.self) {
        try await stores[0].insert(job(key: "limited"), requestHash: nil, keyWindow: .seconds(60), unfinishedLimit: 3)
    }
}

/// What both job stores promise of a revoked key: no job of it is stored after the revocation
/// (`keys revoke --cancel` then cancels every one), though a replay of one stored before is
/// still that job, and other jobs are stored as ever.
func expectNoJobOfARevokedKeyIsStored(_ stores: [any JobStore]) async throws {
    func job(key name: String?, idempotencyKey: String? = nil) -> JobRecord {
        JobRecord(
            id: JobRecord.newID(), kind: .async, workflow: ["1": .object(["class_type": .string("x")])], outputNodeID: "1", owner: "10.0.0.1",
            keyName: name, idempotencyKey: idempotencyKey
        )
    }
    try await stores[0].createKey(APIKey(name: "gone"), hash: APIKey.hash(of: "gone-secret"))
    let before = try await stores[0].insert(job(key: "gone", idempotencyKey: "before"), requestHash: "h", keyWindow: .seconds(60), unfinishedLimit: nil)
    #expect(try await stores[0].revokeKey(named: "gone", at: Date()))
    let last = stores[stores.count - 1]
    for limit in [nil, 5] {
        let refused = await #expect(throws: JobStoreError.self) {
            try await last.insert(job(key: "gone"), requestHash: nil, keyWindow: .seconds(60), unfinishedLimit: limit)
        }
        #expect(refused?.kind == .keyRevoked, "\(String(describing: refused))")
    }
    let replay = try await last.insert(job(key: "gone", idempotencyKey: "before"), requestHash: "h", keyWindow: .seconds(60), unfinishedLimit: nil)
    #expect(replay.record.id == before.record.id)
    #expect(try await stores[0].unfinishedJobCount(key: "gone") == 1)
    if case .created = try await last.insert(job(key: nil), requestHash: nil, keyWindow: .seconds(60), unfinishedLimit: nil) {} else {
        Issue.record("a job without a key is stored")
    }
}
