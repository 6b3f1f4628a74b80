@testable import Comfy
import Foundation
import Testing

/// The SQLite connection under the embedded job store, whose statements are compiled once.
struct SQLiteDatabaseTests {
    func withDatabase(_ body: (SQLiteDatabase, String) async throws -> Void) async throws {
        try await withTemporaryFolder("sqlite") { directory in
            let path = "\(directory)/test.sqlite"
            let database = try await SQLiteDatabase.open(path: path)
            _ = try await database.query("PRAGMA journal_mode = WAL")
            _ = try await database.query("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT UNIQUE, weight REAL, note TEXT)")
            try await body(database, path)
            await database.close()
        }
    }

    @Test func aKeptStatementRunsAgainWithNewValuesAndSeesTheRowsWrittenSince() async throws {
        try await withDatabase { database, _ in
            for index in 1...5 {
                _ = try await database.query("INSERT INTO things (name, weight) VALUES (?, ?)", [.text("thing \(index)"), .double(Double(index) / 2)])
                let rows = try await database.query("SELECT COUNT(*) AS n, SUM(weight) AS total FROM things WHERE weight > ?", [.double(0)])
                #expect(rows.first?.integer("n") == index)
                #expect(rows.first?.double("total") == Double(index * (index + 1)) / 4)
            }
            let names = try await database.query("SELECT name FROM things WHERE weight >= ? ORDER BY id", [.double(2)])
            #expect(names.map { $0.text("name") } == ["thing 4", "thing 5"])
        }
    }

    @Test func valuesReadBackAsBoundUnicodeNullsAndLargeIntegersIncluded() async throws {
        try await withDatabase { database, _ in
            let text = "画一只猫 🐱 \"quoted\" and a\u{0}zero byte"
            _ = try await database.query(
                "INSERT INTO things (id, name, weight, note) VALUES (?, ?, ?, ?)", [.integer(Int(Int64.max) - 1), .text(text), .null, .text("")]
            )
            let row = try #require(try await database.query("SELECT * FROM things").first)
            #expect(row.integer("id") == Int(Int64.max) - 1)
            #expect(row.text("name") == text)
            #expect(row.column("weight") == .null)
            #expect(row.text("note") == "")
            #expect(row.column("missing") == nil)
        }
    }

    @Test func afterAFailedStatementAndAReadNoSnapshotKeepsTheLogFromBeingCheckpointed() async throws {
        try await withDatabase { database, path in
            _ = try await database.query("INSERT INTO things (name) VALUES (?)", [.text("one")])
            _ = try await database.query("INSERT INTO things (name) VALUES (?)", [.text("two")])
            await #expect(throws: SQLiteFailure.self) {
                try await database.query("INSERT INTO things (name) VALUES (?)", [.text("one")])
            }
            #expect(try await database.query("SELECT name FROM things ORDER BY id").count == 2)
            // Another connection writes and then checkpoints the whole log: a read snapshot left
            // open by the first connection's kept statements would make the checkpoint busy.
            let other = try await SQLiteDatabase.open(path: path)
            _ = try await other.query("INSERT INTO things (name) VALUES (?)", [.text("three")])
            let checkpoint = try #require(try await other.query("PRAGMA wal_checkpoint(TRUNCATE)").first)
            #expect(checkpoint.integer("busy") == 0)
            await other.close()
            #expect(try await database.query("SELECT COUNT(*) AS n FROM things").first?.integer("n") == 3)
        }
    }

    /// The database with its checkpoints handed to a second connection at 8 pages (backstop 32).
    func withCheckpointer(_ body: (SQLiteDatabase, SQLiteDatabase, String) async throws -> Void) async throws {
        try await withDatabase { database, path in
            let checkpointer = try await SQLiteDatabase.open(path: path)
            try await database.handCheckpoints(to: checkpointer, atPages: 8)
            try await body(database, checkpointer, path)
            await checkpointer.close()
        }
    }

    /// Inserts a row of most of a page.
    func insertLargeRow(_ name: String, into database: SQLiteDatabase) async throws {
        _ = try await database.query("INSERT INTO things (name, note) VALUES (?, ?)", [.text(name), .text(String(repeating: "x", count: 3000))])
    }

    @Test func handedCheckpointsStartTheLogOverAtTheirMarkAndKeepEveryRow() async throws {
        try await withCheckpointer { database, checkpointer, path in
            var largestLog = 0
            for batch in 0..<40 {
                for index in 0..<4 { try await insertLargeRow("\(batch)-\(index)", into: database) }
                // Queued behind the cycle the batch may have started: its checkpoint, then its finish.
                _ = try await checkpointer.query("SELECT 1")
                _ = try await database.query("SELECT 1")
                largestLog = max(largestLog, try logSize(path))
            }
            // 160 rows of most of a page each: under SQLite's own mark of 1000 pages the log would
            // pass 2 MB; here it starts over after every cycle, well before its backstop (32 pages).
            #expect(largestLog < 32 * 4096, "\(largestLog) bytes of log")
            #expect(try await database.query("SELECT COUNT(*) AS n FROM things").first?.integer("n") == 160)
        }
    }

    @Test func commitsThatOutrunTheCheckpointerCheckpointThemselvesSoTheLogStaysBounded() async throws {
        try await withCheckpointer { database, checkpointer, path in
            var largestLog = 0
            for index in 0..<300 {
                try await insertLargeRow("\(index)", into: database)
                largestLog = max(largestLog, try logSize(path))
            }
            // 300 rows of most of a page each make 4.1 MB of log with no checkpoint, or under
            // SQLite's own mark. Past four times the mark a commit checkpoints itself once the
            // checkpointer is not at it; 2 MB leaves room for what is written while a slow disk
            // holds the checkpointer.
            #expect(largestLog < 2 << 20, "\(largestLog) bytes of log")
            await checkpointer.close()
            await database.close()
            let reopened = try await SQLiteDatabase.open(path: path)
            #expect(try await reopened.query("SELECT COUNT(*) AS n FROM things WHERE length(note) = 3000").first?.integer("n") == 300)
            await reopened.close()
        }
    }

    func logSize(_ path: String) throws -> Int {
        (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0
    }

    @Test func aClosedDatabaseRefusesCalls() async throws {
        try await withDatabase { database, _ in
            await database.close()
            await #expect(throws: SQLiteFailure.self) { try await database.query("SELECT 1") }
        }
    }

    @Test func aFileThatCannotBeOpenedFailsWithSQLitesReason() async throws {
        await #expect(throws: SQLiteFailure.self) { try await SQLiteDatabase.open(path: "/nonexistent-\(UUID().uuidString)/test.sqlite") }
    }
}
