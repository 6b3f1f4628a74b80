import Foundation

/// A process started for a test, its output kept in a log file; stopped by `stop()`.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: String? = nil, logPath: String, stdout: Pipe? = nil) throws {
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: executable)
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { _, new in new }
        process.environment = merged
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardError = log
        process.standardOutput = stdout ?? log
        try Self.withNoSignalsBlocked { try process.run() }
    }

    /// Runs `body` (the spawn) with no signal blocked on this thread. A child inherits its
    /// parent thread's signal mask, and the test runner's threads block SIGTERM: a child that
    /// does not unblock it (Python's servers, moto) never saw the SIGTERM of `stop()` and was
    /// killed only after the grace time, ten seconds per test.
    private static func withNoSignalsBlocked<T>(_ body: () throws -> T) rethrows -> T {
        var none = sigset_t()
        var old = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &old)
        defer { pthread_sigmask(SIG_SETMASK, &old, nil) }
        return try body()
    }

    var isRunning: Bool { process.isRunning }
    var pid: Int32 { process.processIdentifier }

    /// Sends `signal` and waits for the exit; returns the exit status (or the signal that ended it).
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM, grace: Duration = .seconds(10)) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        if let status = waitForExit(within: grace) { return status }
        // A process that ignores the signal must not hang the test run.
        kill(process.processIdentifier, SIGKILL)
        return waitForExit(within: .seconds(10)) ?? -1
    }

    func waitForExit(within limit: Duration) -> Int32? {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let status = Self.exitStatus(of: process) { return status }
            usleep(10_000)
        }
        return nil
    }

    /// The exit status (or the signal that ended it) once `process` has exited, else `nil`.
    /// Reaps it ourselves too: Foundation's own watcher can miss the exit under the test
    /// runner, and `waitUntilExit()` then never returns.
    static func exitStatus(of process: Process) -> Int32? {
        if !process.isRunning { return process.terminationStatus }
        var status: Int32 = 0
        guard waitpid(process.processIdentifier, &status, WNOHANG) == process.processIdentifier else { return nil }
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : signal
    }

    /// The log so far, for failure messages.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Reads the `READY <port>` line a test server prints once it listens.
    func readyPort(from pipe: Pipe) throws -> Int {
        var line = [UInt8]()
        let handle = pipe.fileHandleForReading
        while true {
            let byte = handle.readData(ofLength: 1)
            guard let first = byte.first else { throw TestFailure("\(process.executableURL?.lastPathComponent ?? "server") exited before READY:\n\(log)") }
            if first == UInt8(ascii: "\n") { break }
            line.append(first)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("READY "), let port = Int(text.dropFirst(6)) else { throw TestFailure("expected READY <port>, got \(text)") }
        return port
    }
}

/// The app started with `environment` (over a socket in `directory` and a ComfyUI nobody listens
/// on) until it stops by itself: its exit status and its log. It runs in `directory`, so a
/// developer's ./.env cannot add to (or fix) the settings under test.
func appRefusal(in directory: String, _ environment: [String: String], log name: String = "app") throws -> (status: Int32, log: String) {
    var merged = ["FCGI_SOCKET": "\(directory)/\(name).sock", "COMFYUI_SERVER": "http://127.0.0.1:9"]
    merged.merge(environment) { _, given in given }
    let app = try ChildProcess(TestPaths.gatewayBinary, [], environment: merged, directory: directory, logPath: "\(directory)/\(name).log")
    return (app.stop(0), app.log)
}
