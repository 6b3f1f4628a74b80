import Foundation
import NIOPosix
import Synchronization
// sqlite-nio's vendored SQLite (its functions carry a `sqlite_nio_` prefix). Its Swift layer
// compiles every statement again on every call; here each statement is compiled once.
import VaporCSQLite

/// One SQLite connection that keeps its compiled statements, on a thread of its own.
///
/// Compiling the job store's statements cost nearly as much as running them (perf at 16
/// concurrent jobs: `sqlite3_prepare` 5.5% of the app's CPU, `sqlite3_step` 7%). Every call
/// runs on `thread`, so the cooperative pool never waits on the disk, and the handle and the
/// statement cache are only ever touched there.
final class SQLiteDatabase: @unchecked Sendable {
    private let thread: NIOThreadPool
    // Touched only on `thread`.
    private var handle: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    /// The connection that runs this one's log checkpoints (see `handCheckpoints`).
    private var checkpointer: SQLiteDatabase?
    /// A checkpoint cycle (the checkpointer's run, then the finish here) is under way.
    private let checkpointCycle = Atomic<Bool>(false)
    /// Log pages at which a commit starts a checkpoint cycle.
    private var checkpointPages: Int32 = 1000

    private init(thread: NIOThreadPool) {
        self.thread = thread
    }

    /// Opens (or creates) the database file.
    static func open(path: String) async throws -> SQLiteDatabase {
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        let database = SQLiteDatabase(thread: thread)
        do {
            try await thread.runIfActive { try database.openNow(path: path) }
        } catch {
            try? await thread.shutdownGracefully()
            throw error
        }
        return database
    }

    /// Runs one statement with its parameters (`?`, `?NNN` in order); returns its rows.
    func query(_ sql: String, _ binds: [SQLiteValue] = []) async throws -> [SQLiteResultRow] {
        do {
            return try await thread.runIfActive { try self.run(sql, binds) }
        } catch let error as SQLiteFailure {
            throw error
        } catch {
            throw SQLiteFailure(code: SQLITE_MISUSE, message: "the database is closed")
        }
    }

    /// Moves this connection's log checkpoints off its commits, onto `checkpointer`: a second
    /// connection to the same file, with a thread of its own.
    ///
    /// SQLite's own checkpoint runs inside the commit that leaves 1000 pages in the log, fsyncs
    /// included: 1 commit in about 140 waited ~5 ms for it on a job's path. Here that commit starts
    /// a cycle and returns. The checkpointer copies the log into the file beside the commits
    /// that follow (`PASSIVE`), then this thread copies the few pages they added, with no
    /// commit beside it. The log is then all in the file and the next commit starts it over, so
    /// it stays near `pages` under any rate of writes. Should the cycle fall four times behind,
    /// a commit checkpoints itself, as SQLite would.
    func handCheckpoints(to checkpointer: SQLiteDatabase, atPages pages: Int32 = 1000) async throws {
        try await thread.runIfActive {
            self.checkpointer = checkpointer
            self.checkpointPages = pages
            sqlite_nio_sqlite3_wal_hook(self.handle, { context, handle, _, pages in
                Unmanaged<SQLiteDatabase>.fromOpaque(context!).takeUnretainedValue().committed(leaving: pages, handle: handle)
            }, Unmanaged.passUnretained(self).toOpaque())
        }
    }

    /// Finalizes the statements and closes the connection; no call may follow.
    func close() async {
        _ = try? await thread.runIfActive {
            sqlite_nio_sqlite3_wal_hook(self.handle, nil, nil)
            self.checkpointer = nil
            for statement in self.statements.values { sqlite_nio_sqlite3_finalize(statement) }
            self.statements = [:]
            sqlite_nio_sqlite3_close(self.handle)
            self.handle = nil
        }
        try? await thread.shutdownGracefully()
    }

    // MARK: On the thread

    /// `sqlite3_initialize` once, before any connection: it sets SQLite's global state.
    private static let initialized: Void = { _ = sqlite_nio_sqlite3_initialize() }()

    private func openNow(path: String) throws {
        Self.initialized
        let flags = SQLITE_OPEN_CREATE | SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        var opened: OpaquePointer?
        let status = sqlite_nio_sqlite3_open_v2(path, &opened, flags, nil)
        guard status == SQLITE_OK else {
            let message = opened.flatMap { sqlite_nio_sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "error \(status)"
            sqlite_nio_sqlite3_close(opened)
            throw SQLiteFailure(code: status, message: message)
        }
        // Another process (`FCGIApp keys`) may hold the write lock for a moment: wait for it.
        sqlite_nio_sqlite3_busy_timeout(opened, 30_000)
        handle = opened
    }

    /// After each commit (SQLite's WAL hook), with the pages now in the log.
    private func committed(leaving pages: Int32, handle: OpaquePointer?) -> Int32 {
        guard pages >= checkpointPages, let checkpointer else { return SQLITE_OK }
        if pages >= 4 * checkpointPages {
            // Its result is not the commit's: an error returned here would fail a statement that
            // did commit (busy only means the checkpointer is at it, and the next commit tries again).
            _ = sqlite_nio_sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            return SQLITE_OK
        }
        guard !checkpointCycle.exchange(true, ordering: .acquiringAndReleasing) else { return SQLITE_OK }
        checkpointer.thread.submit { state in
            if case .active = state, let handle = checkpointer.handle {
                _ = sqlite_nio_sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            }
            self.thread.submit { state in
                if case .active = state, let handle = self.handle {
                    _ = sqlite_nio_sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
                }
                self.checkpointCycle.store(false, ordering: .releasing)
            }
        }
        return SQLITE_OK
    }

    private func run(_ sql: String, _ binds: [SQLiteValue]) throws(SQLiteFailure) -> [SQLiteResultRow] {
        let statement = try prepared(sql)
        // Reset whatever happens: a statement left mid-way would hold its read snapshot open.
        defer {
            sqlite_nio_sqlite3_reset(statement)
            sqlite_nio_sqlite3_clear_bindings(statement)
        }
        for (offset, value) in binds.enumerated() {
            try check(bind(value, at: Int32(offset + 1), in: statement))
        }
        var rows: [SQLiteResultRow] = []
        var names: SQLiteResultRow.Names?
        while true {
            let status = sqlite_nio_sqlite3_step(statement)
            if status == SQLITE_DONE { return rows }
            guard status == SQLITE_ROW else { throw failure(status) }
            // Read after the first step: a kept statement is compiled again there if the schema changed.
            let count = sqlite_nio_sqlite3_column_count(statement)
            let columns = names ?? SQLiteResultRow.Names((0..<count).map { String(cString: sqlite_nio_sqlite3_column_name(statement, $0)) })
            names = columns
            rows.append(SQLiteResultRow(names: columns, values: (0..<count).map { column(at: $0, of: statement) }))
        }
    }

    /// The statement compiled for `sql`, compiled now the first time.
    private func prepared(_ sql: String) throws(SQLiteFailure) -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        let status = sqlite_nio_sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard status == SQLITE_OK, let statement else { throw failure(status) }
        statements[sql] = statement
        return statement
    }

    private func bind(_ value: SQLiteValue, at index: Int32, in statement: OpaquePointer) -> Int32 {
        switch value {
        case .null:
            return sqlite_nio_sqlite3_bind_null(statement, index)
        case .integer(let integer):
            return sqlite_nio_sqlite3_bind_int64(statement, index, Int64(integer))
        case .double(let double):
            return sqlite_nio_sqlite3_bind_double(statement, index, double)
        case .text(let text):
            return sqlite_nio_sqlite3_bind_text64(statement, index, text, UInt64(text.utf8.count), Self.transient, UInt8(SQLITE_UTF8))
        }
    }

    private func column(at index: Int32, of statement: OpaquePointer) -> SQLiteValue {
        switch sqlite_nio_sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER:
            return .integer(Int(sqlite_nio_sqlite3_column_int64(statement, index)))
        case SQLITE_FLOAT:
            return .double(sqlite_nio_sqlite3_column_double(statement, index))
        case SQLITE_TEXT, SQLITE_BLOB:
            let count = Int(sqlite_nio_sqlite3_column_bytes(statement, index))
            guard let bytes = sqlite_nio_sqlite3_column_blob(statement, index) else { return .text("") }
            return .text(String(decoding: UnsafeRawBufferPointer(start: bytes, count: count), as: UTF8.self))
        default:
            return .null
        }
    }

    private func check(_ status: Int32) throws(SQLiteFailure) {
        guard status == SQLITE_OK else { throw failure(status) }
    }

    private func failure(_ status: Int32) -> SQLiteFailure {
        SQLiteFailure(code: status, message: sqlite_nio_sqlite3_errmsg(handle).map { String(cString: $0) } ?? "error \(status)")
    }

    /// SQLite copies the bytes before the bind returns (`SQLITE_TRANSIENT`).
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}

/// A value bound to a statement or read from a row.
enum SQLiteValue: Sendable, Equatable {
    case null
    case integer(Int)
    case double(Double)
    case text(String)

    var string: String? {
        if case .text(let text) = self { return text }
        return nil
    }

    var integer: Int? {
        switch self {
        case .integer(let integer): integer
        case .double(let double): Int(exactly: double.rounded(.towardZero))
        default: nil
        }
    }

    var double: Double? {
        switch self {
        case .double(let double): double
        case .integer(let integer): Double(integer)
        default: nil
        }
    }

    static func optionalText(_ text: String?) -> SQLiteValue { text.map { .text($0) } ?? .null }
    static func optionalInteger(_ value: Int?) -> SQLiteValue { value.map { .integer($0) } ?? .null }
}

/// One result row: its values by column name.
struct SQLiteResultRow: Sendable, JobStoreRow {
    /// A statement's column names and their positions, shared by its rows.
    final class Names: Sendable {
        let positions: [String: Int]
        init(_ names: [String]) {
            var positions: [String: Int] = [:]
            for (index, name) in names.enumerated() where positions[name] == nil { positions[name] = index }
            self.positions = positions
        }
    }

    let names: Names
    let values: [SQLiteValue]

    func column(_ name: String) -> SQLiteValue? { names.positions[name].map { values[$0] } }
    /// The first column's value (`PRAGMA` answers).
    var first: SQLiteValue? { values.first }

    func text(_ column: String) -> String? { self.column(column)?.string }
    func integer(_ column: String) -> Int? { self.column(column)?.integer }
    func double(_ column: String) -> Double? { self.column(column)?.double }
}

/// SQLite refused a call: its result code and message.
struct SQLiteFailure: Error, CustomStringConvertible {
    var code: Int32
    var message: String
    var description: String { "\(message) (SQLite code \(code))" }
}
