@testable import Comfy
import Foundation
import Testing

/// What both job stores promise of an end that lets its idempotency key go (a keyed call the
/// gateway cancelled as its caller had gone): in the same write, the key names the job no more
/// and a new job may take it; an end that does not let it go keeps it.
func expectAnEndReleasingItsKeyLetsANewJobTakeIt(_ stores: [any JobStore]) async throws {
    let (writer, reader) = (stores[0], stores[stores.count - 1])
    func job(key: String) -> JobRecord {
        JobRecord(
            id: JobRecord.newID(), kind: .sync, workflow: ["1": .object(["class_type": .string("x")])], outputNodeID: "1", owner: "10.0.0.1",
            idempotencyKey: key
        )
    }
    let (released, kept) = (job(key: "released"), job(key: "kept"))
    for record in [released, kept] { _ = try await writer.insert(record, requestHash: "h", keyWindow: .seconds(60), unfinishedLimit: nil) }
    let ended = try #require(
        try await writer.finish(released.id, status: .cancelled, result: nil, failure: nil, gpuMilliseconds: nil, imageBytes: nil, releasingKey: true, at: Date())
    )
    #expect(ended.idempotencyKey == nil, "the final record says so: a retry that waited on the job knows to start anew")
    _ = try await writer.finish(kept.id, status: .cancelled, result: nil, failure: nil, at: Date())
    #expect(try await reader.idempotentJob("released", within: .seconds(60), at: Date()) == nil)
    #expect(try await reader.idempotentJob("kept", within: .seconds(60), at: Date())?.job.id == kept.id)
    let retry = job(key: "released")
    #expect(try await reader.insert(retry, requestHash: "h", keyWindow: .seconds(60), unfinishedLimit: nil) == .created(retry))
}
