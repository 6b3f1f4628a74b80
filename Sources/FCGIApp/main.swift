import CFastCGI
import Foundation
import Logging

// libfcgi installs its own SIGTERM handler in FCGX_Init; the service group replaces it
// afterwards with its own, so SIGTERM drains in-flight requests instead.
FCGX_Init()

let configuration: GatewayConfiguration
do {
    configuration = try GatewayConfiguration(Environment())
} catch {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    exit(2)
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = configuration.logLevel
    return handler
}
let logger = Logger(label: "comfy-gateway")
let metricsRegistry = MetricsRoute.bootstrap()

do {
    try await Gateway(configuration: configuration, logger: logger).run()
} catch {
    logger.critical("gateway stopped", metadata: ["error": "\(error)"])
    exit(1)
}
