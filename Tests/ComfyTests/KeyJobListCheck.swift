@testable import Comfy
import Foundation
import Testing

/// What both job stores promise of a key's job list (`GET /api/jobs`): the key's jobs alone,
/// newest first, page by page after the last job of the page before, filtered by status; a
/// cursor naming another key's job, or none, is no page. Written on one store (instance) and
/// read on the last.
func expectAKeysJobsAreListedNewestFirstPageByPage(_ stores: [any JobStore]) async throws {
    let (writer, reader) = (stores[0], stores[stores.count - 1])
    func job(key name: String?) -> JobRecord {
        JobRecord(
            id: JobRecord.newID(), kind: .async, workflow: ["1": .object(["class_type": .string("x")])], outputNodeID: "1", owner: "10.0.0.1",
            keyName: name
        )
    }
    var alices: [JobRecord] = []
    for index in 0..<5 {
        alices.append(job(key: "alice"))
        _ = try await writer.insert(alices[index], requestHash: nil, keyWindow: .seconds(60), unfinishedLimit: nil)
        // Another key's job and a keyless one between alice's: not hers.
        _ = try await writer.insert(job(key: index == 2 ? "bob" : nil), requestHash: nil, keyWindow: .seconds(60), unfinishedLimit: nil)
    }
    _ = try await writer.finish(alices[1].id, status: .completed, result: nil, failure: nil, at: Date())
    _ = try await writer.finish(alices[3].id, status: .failed, result: nil, failure: nil, at: Date())
    let newestFirst = alices.reversed().map(\.id)

    var listed: [String] = []
    var cursor: String?
    var pages = 0
    repeat {
        let page = try #require(try await reader.jobs(ofKey: "alice", statuses: [], before: cursor, limit: 2))
        listed += page.map(\.id)
        cursor = page.count == 2 ? page.last?.id : nil
        pages += 1
    } while cursor != nil && pages < 10
    #expect(listed == newestFirst, "every job of the key once, newest first")
    #expect(pages == 3)

    let ended = try #require(try await reader.jobs(ofKey: "alice", statuses: [.completed, .failed], before: nil, limit: 10))
    #expect(ended.map(\.id) == [alices[3].id, alices[1].id])
    #expect(ended.map(\.status) == [.failed, .completed])
    let queuedAfter = try #require(try await reader.jobs(ofKey: "alice", statuses: [.queued], before: alices[4].id, limit: 10))
    #expect(queuedAfter.map(\.id) == [alices[2].id, alices[0].id])

    let bobs = try #require(try await reader.jobs(ofKey: "bob", statuses: [], before: nil, limit: 10))
    #expect(bobs.count == 1)
    // A cursor of another key's job, or of no job, is no cursor: nothing of bob's is learnt by it.
    #expect(try await reader.jobs(ofKey: "alice", statuses: [], before: bobs[0].id, limit: 10) == nil)
    #expect(try await reader.jobs(ofKey: "bob", statuses: [], before: alices[4].id, limit: 10) == nil)
    #expect(try await reader.jobs(ofKey: "alice", statuses: [], before: JobRecord.newID(), limit: 10) == nil)
    #expect(try await reader.jobs(ofKey: "nobody", statuses: [], before: nil, limit: 10) == [])
}
