/// A whole WebSocket message (fragments already joined).
public enum WebSocketMessage: Sendable, Equatable {
    case text(String)
    case binary([UInt8])
}
