import Foundation
import NIOCore
import PostgresNIO

/// Input images in `job_inputs`, by their content-derived name, for whichever instance runs the job.
extension PostgresJobStore: SharedInputStore {
    public func saveInput(_ bytes: [UInt8], named name: String) async throws {
        try await guarded {
            try await execute(
                """
                INSERT INTO job_inputs (name, bytes, used_at) VALUES (\(name), \(ByteBuffer(bytes: bytes)), gateway_now_ms())
                ON CONFLICT (name) DO UPDATE SET used_at = EXCLUDED.used_at
                """
            )
        }
    }

    public func input(named name: String) async throws -> [UInt8]? {
        try await guarded {
            guard let row = try await rows("SELECT bytes FROM job_inputs WHERE name = \(name)").first,
                let buffer = try? row["bytes"].decode(ByteBuffer.self)
            else { return nil }
            return Array(buffer.readableBytesView)
        }
    }

    public func removeInputs(unusedSince date: Date) async throws -> Int {
        try await guarded {
            try await rows("DELETE FROM job_inputs WHERE used_at < \(date.milliseconds) RETURNING name").count
        }
    }
}
