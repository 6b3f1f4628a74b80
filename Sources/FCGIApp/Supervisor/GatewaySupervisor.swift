import Foundation
import Comfy
import GatewayApp
import Logging

/// `FCGIApp run`: the one start-up routine of `make run`, `make bench` and the tests.
///
/// It renders nginx from the app's own parsed configuration, starts the app (`FCGIApp serve`)
/// and waits for its sockets, then starts nginx. When the app dies it logs why and starts it
/// again (`RestartBackoff`) while nginx goes on serving images; SIGTERM or SIGINT lets both
/// drain, and the supervisor exits with the app's status.
struct GatewaySupervisor {
    let configuration: GatewayConfiguration
    /// The variables the children get: the process environment over `.env`.
    let environment: [String: String]
    let logger: Logger

    /// The app's exit status when its configuration or state forbids it to run (EX_CONFIG): not restarted.
    static let refusedToStart: Int32 = 78

    func run() -> Int32 {
        // Signals are waited for (sigtimedwait), not handled; blocked before any thread starts.
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let site = NginxSite(configuration: configuration)
        do {
            // Before anything in RUN_DIR is touched: a second run would take over the first's
            // sockets and configuration, and leave it answering 503.
            try lockRunDirectory()
            try site.render()
            let firstApp = try startApp(signals: &signals)
            let nginx: SupervisedProcess
            do {
                nginx = try SupervisedProcess.spawn(
                    "nginx", path: NginxSite.nginxPath, arguments: ["-e", site.errorLog, "-p", site.prefix, "-c", site.configPath], environment: environment
                )
            } catch {
                stop(firstApp)
                throw error
            }
            let scheme = configuration.site.tls == nil ? "http" : "https"
            let banner = "Comfy Gateway on \(scheme)://127.0.0.1:\(configuration.site.port) (ComfyUI: \(configuration.comfyServers.map(\.description).joined(separator: ", ")))\n"
            FileHandle.standardOutput.write(Data(banner.utf8))
            var app: SupervisedProcess? = firstApp
            var started = ContinuousClock.now
            var backoff = RestartBackoff()
            // While the app is down: when to start it again.
            var restartAt: ContinuousClock.Instant?
            while true {
                var timeout = timespec(seconds: min(.seconds(1), restartAt.map { max($0 - .now, .zero) } ?? .seconds(1)))
                let signal = sigtimedwait(&signals, nil, &timeout)
                if signal == SIGTERM || signal == SIGINT || signal == SIGHUP {
                    guard let app else {
                        // Asked to stop while the app is down: a stop, not a failure.
                        stopNginx(nginx)
                        return 0
                    }
                    return shutDown(app: app, nginx: nginx)
                }
                if let status = nginx.poll() {
                    logger.error("nginx stopped; stopping the app", metadata: ["nginx.exit": "\(status)"])
                    if let log = try? String(contentsOfFile: site.errorLog, encoding: .utf8), log.contains("Address already in use") {
                        FileHandle.standardError.write(Data("port \(configuration.site.port) is taken by another program: stop it, or set PORT to a free port\n".utf8))
                    }
                    if let app { stop(app) }
                    return 1
                }
                if let running = app {
                    guard let status = running.poll() else { continue }
                    guard status.shellStatus != Self.refusedToStart else {
                        logger.critical("the app refused to start; see the line above", metadata: ["app.exit": "\(status)"])
                        stopNginx(nginx)
                        return Self.refusedToStart
                    }
                    app = nil
                    let pause = backoff.pause(afterRunning: .now - started)
                    logger.error("the app stopped; starting it again", metadata: ["app.exit": "\(status)", "app.restart_in": "\(pause)"])
                    restartAt = .now + pause
                }
                guard let due = restartAt, due <= .now else { continue }
                do {
                    app = try startApp(signals: &signals)
                    started = .now
                    restartAt = nil
                } catch is AppRefusedToStart {
                    stopNginx(nginx)
                    return Self.refusedToStart
                } catch let failure as AppStartFailed {
                    // It stopped again before it listened: a quick stop like any other.
                    let pause = backoff.pause(afterRunning: .zero)
                    logger.error("the app did not start; trying again", metadata: ["app.error": "\(failure)", "app.restart_in": "\(pause)"])
                    restartAt = .now + pause
                } catch {
                    // A stop asked meanwhile: nginx must not outlive the supervisor, answering 503 on the port.
                    stopNginx(nginx)
                    throw error
                }
            }
        } catch is AppRefusedToStart {
            return Self.refusedToStart
        } catch is StopRequested {
            return 0
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            return 2
        }
    }

    /// Holds `RUN_DIR/supervisor.lock` for the supervisor's life (not its children's: a lock
    /// they inherited would outlive it).
    private func lockRunDirectory() throws {
        let path = "\(configuration.site.runDirectory)/supervisor.lock"
        try FileManager.default.createDirectory(atPath: configuration.site.runDirectory, withIntermediateDirectories: true)
        do {
            try ProcessLock.take(path)
        } catch .held {
            let pids = ["app.pid", "nginx.pid"].compactMap { name in
                (try? String(contentsOfFile: "\(configuration.site.runDirectory)/\(name)", encoding: .utf8)).map { "\(name.dropLast(4)) \($0.trimmingCharacters(in: .whitespacesAndNewlines))" }
            }
            throw SupervisorError(
                description: "another gateway runs in \(configuration.site.runDirectory) (\(pids.joined(separator: ", "))); stop it first, or give this one its own RUN_DIR and PORT"
            )
        } catch .unusable(let reason) {
            throw SupervisorError(description: "cannot open \(path): \(reason)")
        }
    }

    /// nginx finishes what it serves, within ten seconds.
    private func stopNginx(_ nginx: SupervisedProcess) {
        nginx.signal(SIGQUIT)
        if nginx.wait(within: .seconds(10)) == nil { nginx.signal(SIGKILL) }
    }

    private func stop(_ app: SupervisedProcess) {
        app.signal(SIGTERM)
        if app.wait(within: configuration.drainTimeout + .seconds(10)) == nil { app.signal(SIGKILL) }
    }

    /// Starts `FCGIApp serve` and returns once both its sockets listen. A stop asked meanwhile
    /// stops the app too: it must not outlive the supervisor.
    private func startApp(signals: inout sigset_t) throws -> SupervisedProcess {
        // A socket file left by a killed app would look like a listening one.
        let listeners = [ListenAddress(configuration.socketPath), ListenAddress(configuration.webSocketPath)]
        for case .unix(let path) in listeners { unlink(path) }
        let app: SupervisedProcess
        do {
            app = try SupervisedProcess.spawn("app", path: Self.executablePath, arguments: ["serve"], environment: environment)
        } catch {
            // No memory or processes to spare, or the binary being replaced: tried again like a crash.
            throw AppStartFailed(description: "\(error)")
        }
        try? "\(app.pid)\n".write(toFile: "\(configuration.site.runDirectory)/app.pid", atomically: true, encoding: .utf8)
        let deadline = ContinuousClock.now + .seconds(60)
        while !listeners.allSatisfy(\.isListening) {
            if let status = app.poll() {
                if status.shellStatus == Self.refusedToStart { throw AppRefusedToStart() }
                throw AppStartFailed(description: "the app \(status) before it listened")
            }
            guard ContinuousClock.now < deadline else {
                app.signal(SIGKILL)
                _ = app.wait(within: .seconds(5))
                throw AppStartFailed(description: "the app did not open \(configuration.socketPath) within 60 s")
            }
            var pause = timespec(tv_sec: 0, tv_nsec: 10_000_000)
            let signal = sigtimedwait(&signals, nil, &pause)
            if signal == SIGTERM || signal == SIGINT || signal == SIGHUP {
                app.signal(SIGTERM)
                if app.wait(within: .seconds(10)) == nil { app.signal(SIGKILL) }
                throw StopRequested()
            }
        }
        return app
    }

    /// nginx finishes open requests while the app drains (SHUTDOWN_DRAIN_TIMEOUT); then both are gone.
    private func shutDown(app: SupervisedProcess, nginx: SupervisedProcess) -> Int32 {
        nginx.signal(SIGQUIT)
        app.signal(SIGTERM)
        let appStatus = app.wait(within: configuration.drainTimeout + .seconds(15)) ?? {
            app.signal(SIGKILL)
            return app.wait(within: .seconds(5))
        }()
        // A graceful nginx waits for proxied WebSockets; the app has closed its end by now.
        if nginx.wait(within: .seconds(10)) == nil {
            nginx.signal(SIGTERM)
            if nginx.wait(within: .seconds(5)) == nil {
                nginx.signal(SIGKILL)
                _ = nginx.wait(within: .seconds(5))
            }
        }
        return appStatus?.shellStatus ?? 1
    }

    /// This binary, to start it again as the app: read once, at the first start. A rebuild
    /// while the gateway runs (`make keys` builds) replaces the file, and /proc/self/exe then
    /// names the old one "(deleted)"; the path itself holds the new binary.
    static let executablePath: String = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}
