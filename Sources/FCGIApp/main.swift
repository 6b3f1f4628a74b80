import CFastCGI
import Comfy
import Foundation
import GatewayApp
import Logging

// FCGIApp run            nginx and the app, supervised (make run, make bench, the tests)
// FCGIApp serve          the app alone: FastCGI and the drawing WebSocket listener (the default)
// FCGIApp render-nginx   render the nginx configuration into RUN_DIR/nginx and check it
// FCGIApp keys ...       create, list and revoke API keys (make keys ARGS="...")
let command = CommandLine.arguments.dropFirst().first ?? "serve"
guard ["run", "serve", "render-nginx", "keys"].contains(command) else {
    FileHandle.standardError.write(Data("usage: FCGIApp [run | serve | render-nginx | keys ...]\n".utf8))
    exit(64)
}

let environment: Environment
let configuration: GatewayConfiguration
do {
    environment = try Environment()
    configuration = try GatewayConfiguration(environment)
} catch {
    // EX_CONFIG, as for a refused start: a supervisor (systemd's RestartPreventExitStatus) does not retry it.
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(78)
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = configuration.logLevel
    return handler
}
let logger = Logger(label: command == "run" ? "comfy-gateway-supervisor" : "comfy-gateway")

switch command {
case "run":
    exit(GatewaySupervisor(configuration: configuration, environment: environment.all, logger: logger).run())
case "keys":
    exit(await KeysCommand.run(Array(CommandLine.arguments.dropFirst(2)), configuration: configuration))
case "render-nginx":
    do {
        try NginxSite(configuration: configuration).render()
        exit(0)
    } catch {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        exit(2)
    }
default:
    break
}

// On TCP, libfcgi accepts only the peers FCGI_WEB_SERVER_ADDRS lists (the nginx hosts); it
// reads the process environment, and .env may set it too.
if let allowed = environment.all["FCGI_WEB_SERVER_ADDRS"] { setenv("FCGI_WEB_SERVER_ADDRS", allowed, 1) }
// libfcgi installs its own SIGTERM handler in FCGX_Init; the service group replaces it
// afterwards with its own, so SIGTERM drains in-flight requests instead.
FCGX_Init()

do {
    try await GatewayApplication(configuration: configuration, logger: logger).run { frontEnd in
        FastCGIServer(
            socketPath: configuration.socketPath,
            threads: configuration.threads,
            maxBodyBytes: configuration.maxBodyBytes,
            drainTimeout: configuration.drainTimeout,
            logger: logger,
            onDrain: frontEnd.stopAccepting,
            onDrainTimeout: frontEnd.abandonWaiting,
            grantSocket: { [site = NginxSite(configuration: configuration)] in site.grantSocket($0) },
            handler: frontEnd.respond
        )
    }
} catch let error as JobStoreError where error.kind == .newerSchema {
    // Starting again cannot help: one line, and the supervisor gives up.
    FileHandle.standardError.write(Data("comfy-gateway: \(error)\n".utf8))
    exit(GatewaySupervisor.refusedToStart)
} catch let error as ConfigurationError {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(GatewaySupervisor.refusedToStart)
} catch {
    logger.critical("gateway stopped", metadata: ["error": "\(error)"])
    exit(1)
}
