import Foundation
import PostgresNIO

/// Backends an instance finds down, one leased row per backend and instance (renewed with
/// the instance's other leases): every instance avoids them while a report stands.
extension PostgresJobStore: BackendHealthBoard {
    public func report(backend: String, down: Bool, reason: String?) async {
        let notice = "health \(instanceID) \(backend)"
        if down {
            _ = try? await execute(
                """
                WITH reported AS (
                    INSERT INTO backend_reports (backend, instance, reason, lease_until)
                    VALUES (\(backend), \(instanceID), \(reason), gateway_now_ms() + \(leaseTimeout.milliseconds))
                    ON CONFLICT (backend, instance) DO UPDATE SET reason = EXCLUDED.reason, lease_until = EXCLUDED.lease_until
                    RETURNING backend
                )
                SELECT pg_notify(\(Self.channel), \(notice))::text FROM reported
                """
            )
        } else {
            _ = try? await execute(
                """
                WITH withdrawn AS (DELETE FROM backend_reports WHERE backend = \(backend) AND instance = \(instanceID) RETURNING backend)
                SELECT pg_notify(\(Self.channel), \(notice))::text FROM withdrawn
                """
            )
        }
    }

    public func followReports(_ update: @Sendable ([String: BackendReport]) async -> Void) async {
        var last: [String: BackendReport]?
        while !Task.isCancelled {
            // Listen before reading: a report that comes in between is not missed.
            await withChanges { changes in
                if let now = try? await reportsOfOthers(), now != last {
                    last = now
                    await update(now)
                }
                // A report that runs out (its instance died) is announced by nobody: read again
                // within a fraction of the lease.
                _ = try? await withDeadline(.now + leaseTimeout / 3, timeout: { CancellationError() }) {
                    for await change in changes where change == .backendReported || change == .resync { return }
                }
            }
        }
    }

    private func reportsOfOthers() async throws -> [String: BackendReport] {
        try await guarded {
            var reports: [String: BackendReport] = [:]
            for row in try await rows(
                """
                SELECT DISTINCT ON (backend) backend, instance, reason FROM backend_reports
                WHERE instance <> \(instanceID) AND lease_until >= gateway_now_ms() ORDER BY backend, instance
                """
            ) {
                if let backend = row.text("backend"), let instance = row.text("instance") {
                    reports[backend] = BackendReport(instance: instance, reason: row.text("reason"))
                }
            }
            return reports
        }
    }
}
