import Foundation

/// A process the supervisor started with `posix_spawn`: default signal handling, nothing blocked.
struct SupervisedProcess {
    let pid: pid_t
    let name: String

    /// Starts `path` with `arguments` and exactly `environment`.
    static func spawn(_ name: String, path: String, arguments: [String], environment: [String: String]) throws -> SupervisedProcess {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The supervisor blocks its signals to wait for them; its children must not inherit that.
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        // A process group of its own: Ctrl-C and a closed terminal signal the terminal's group,
        // which would stop nginx at once (SIGINT) or reload it (SIGHUP) and kill the app
        // undrained. The supervisor hears them and drains both.
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, nil, &attributes, argv, envp)
        guard result == 0 else {
            throw SupervisorError(description: "cannot start \(name) (\(path)): \(String(cString: strerror(result)))")
        }
        return SupervisedProcess(pid: pid, name: name)
    }

    /// Sends `signal`; a process that is gone already is fine.
    func signal(_ signal: Int32) {
        kill(pid, signal)
    }

    /// Blocks until the process exits, at most `limit`; its status, or `nil` if it still runs.
    func wait(within limit: Duration) -> ExitStatus? {
        let deadline = ContinuousClock.now + limit
        repeat {
            if let status = poll() { return status }
            usleep(10_000)
        } while ContinuousClock.now < deadline
        return nil
    }

    /// The exit status if the process has exited (it is reaped then), else `nil`.
    func poll() -> ExitStatus? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        guard result == pid else { return result < 0 ? ExitStatus(raw: 0) : nil }
        return ExitStatus(raw: status)
    }
}

/// How a child ended, in the words a log line needs.
struct ExitStatus: CustomStringConvertible {
    let raw: Int32

    var signal: Int32? { raw & 0x7F == 0 ? nil : raw & 0x7F }
    var code: Int32 { (raw >> 8) & 0xFF }
    /// The shell's convention: the code, or 128 + the signal.
    var shellStatus: Int32 { signal.map { 128 + $0 } ?? code }

    var description: String {
        if let signal { return "killed by signal \(signal) (\(String(cString: strsignal(signal))))" }
        return "exited with status \(code)"
    }
}

/// Why the supervisor could not start or keep the gateway.
struct SupervisorError: Error, CustomStringConvertible {
    var description: String
}

/// The app exited with `GatewaySupervisor.refusedToStart`: its configuration or state forbids
/// it to run, and it said why.
struct AppRefusedToStart: Error {}

/// The app stopped before it listened, or did not listen in time: started again after a pause
/// when it had been running, reported when it is the first start.
struct AppStartFailed: Error, CustomStringConvertible {
    var description: String
}

/// SIGTERM, SIGINT or SIGHUP came while the app was starting: it was stopped, and so is the supervisor.
struct StopRequested: Error {}

extension timespec {
    /// A wait of `duration` for `sigtimedwait`.
    init(seconds duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    }
}
