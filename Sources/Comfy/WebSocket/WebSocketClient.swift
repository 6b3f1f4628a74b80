import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Opens client WebSocket connections over SwiftNIO (Debian's libcurl has no WebSocket support).
public enum WebSocketClient {
    /// Why a connection could not be opened.
    public struct ConnectError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    private enum UpgradeResult: Sendable {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
        case notUpgraded
    }

    /// Connects to `ws://host:port/path`, runs `body` with the open session, then closes it.
    ///
    /// - Parameter maxMessageSize: ComfyUI's PNG frames and base64 sketches are far above NIO's
    ///   16 KiB default. A larger fragmented message closes the connection; a larger whole one is
    ///   dropped as it arrives and a text message of type `oversizedMessageType` comes in its
    ///   place (`WebSocketOversizedMessageSkipper`).
    /// - Parameter silenceLimit: a server silent this long is pinged, and the connection is
    ///   closed when it stays silent as long again (`WebSocketSilenceCheck`); `nil`: never.
    public static func connect<Result: Sendable>(
        isolation: isolated (any Actor)? = #isolation,
        host: String,
        port: Int,
        path: String,
        maxMessageSize: Int = 64 << 20,
        oversizedMessageType: String = "gateway_message_too_large",
        connectTimeout: TimeAmount = .seconds(5),
        silenceLimit: TimeAmount? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ body: (WebSocketSession) async throws -> Result
    ) async throws -> Result {
        let connected = NIOLockedValueBox<(any Channel)?>(nil)
        let upgrade: EventLoopFuture<UpgradeResult> = try await ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(connectTimeout)
            .connect(host: host, port: port) { channel in
                connected.withLockedValue { $0 = channel }
                return channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<UpgradeResult>(
                        maxFrameSize: maxMessageSize,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(
                                    minNonFinalFragmentSize: 0,
                                    maxAccumulatedFrameCount: 4096,
                                    maxAccumulatedFrameSize: maxMessageSize
                                ))
                                // Right before the frame decoder: bytes that came with the 101 pass it too.
                                let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
                                try channel.pipeline.syncOperations.addHandler(
                                    WebSocketOversizedMessageSkipper(limit: maxMessageSize, placeholderType: oversizedMessageType), position: .before(decoder)
                                )
                                // First, before the frame decoder: it counts bytes as they come.
                                if let silenceLimit {
                                    try channel.pipeline.syncOperations.addHandler(WebSocketSilenceCheck(interval: silenceLimit), position: .first)
                                }
                                return .websocket(try NIOAsyncChannel(wrappingChannelSynchronously: channel))
                            }
                        }
                    )
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(host):\(port)")
                    headers.add(name: "Content-Length", value: "0")
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration<UpgradeResult>(
                        upgradeRequestHead: head,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            // Nobody reads or closes it after this: a server that answers every
                            // upgrade with an error would otherwise keep one socket per retry.
                            channel.close(promise: nil)
                            return channel.eventLoop.makeSucceededFuture(.notUpgraded)
                        }
                    )
                    var pipeline = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: configuration)
                    // Frames the server sends right after its 101 (ComfyUI's first status, a busy
                    // gateway's error) may arrive in the same read: NIO drops them by default.
                    pipeline.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: pipeline)
                }
            }
        let upgraded: UpgradeResult
        do {
            upgraded = try await upgrade.get()
        } catch {
            // A failed upgrade (a bad answer, a broken connection) leaves its channel to us.
            connected.withLockedValue { $0 }?.close(promise: nil)
            throw error
        }
        switch upgraded {
        case .notUpgraded:
            throw ConnectError(description: "ws://\(host):\(port)\(path) refused the WebSocket upgrade")
        case .websocket(let channel):
            return try await channel.executeThenClose { inbound, outbound in
                try await body(WebSocketSession(inbound: inbound, outbound: outbound, masksFrames: true))
            }
        }
    }
}
