import Foundation
import PostgresNIO

extension PostgresJobStore: DrawingSessionStore {
    public func drawingSession(_ id: String) async -> DrawingSessionState? {
        guard let row = try? await rows("SELECT seed, style, prompt, result, owner FROM drawing_sessions WHERE id = \(id)").first,
            let seed = row.integer("seed")
        else { return nil }
        let result = row.text("result").flatMap(JobResult.init(storedText:))
        return DrawingSessionState(
            seed: UInt64(max(0, seed)), style: row.text("style"), prompt: row.text("prompt"),
            latestResult: result.map { StoredImage(filename: $0.filename, url: $0.url, mimeType: $0.contentType, expiresAt: $0.expiresAt) },
            owner: row.text("owner")
        )
    }

    public func drawingResultFilenames() async throws -> Set<String> {
        try await guarded {
            let rows = try await rows("SELECT result FROM drawing_sessions WHERE result IS NOT NULL")
            return Set(rows.compactMap { $0.text("result").flatMap(JobResult.init(storedText:))?.filename })
        }
    }

    public func saveDrawingSession(_ id: String, _ state: DrawingSessionState) async {
        let result = state.latestResult.map { JobResult($0).storedText }
        // Seeds stay below 2^53 (JSON numbers), well inside BIGINT.
        let seed = Int(clamping: state.seed)
        do {
            try await execute(
                """
                INSERT INTO drawing_sessions (id, seed, style, prompt, result, owner, updated_at)
                VALUES (\(id), \(seed), \(state.style), \(state.prompt), \(result), \(state.owner), \(Date().milliseconds))
                ON CONFLICT (id) DO UPDATE SET seed = EXCLUDED.seed, style = EXCLUDED.style, prompt = EXCLUDED.prompt,
                    result = EXCLUDED.result, owner = EXCLUDED.owner, updated_at = EXCLUDED.updated_at
                """
            )
        } catch {
            logger.warning("a drawing session could not be saved to the job store", metadata: ["session.id": "\(id)", "error": "\(Self.reason(error))"])
        }
    }
}
