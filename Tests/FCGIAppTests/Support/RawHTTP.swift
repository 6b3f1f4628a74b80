import Foundation

/// A plain TCP connection to a test server, for requests no HTTP client would send.
final class RawConnection {
    let fd: Int32

    /// - Parameter source: the loopback address to connect from (any of 127.0.0.0/8): another
    ///   client address, as nginx sees it.
    init(port: Int, timeoutSeconds: Int = 10, from source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                close(fd)
                throw TestFailure("bind to \(source) failed")
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw TestFailure("connect to :\(port) failed")
        }
        // A port in the ephemeral range that nobody listens on yet can be picked as the
        // socket's own source port: TCP then connects it to itself, and it "succeeds".
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        guard local.sin_port != address.sin_port else {
            close(fd)
            throw TestFailure("nothing listens on :\(port) (the connection went to itself)")
        }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        guard bytes.withUnsafeBytes({ Foundation.send(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else { throw TestFailure("send failed") }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Up to `count` bytes, or fewer when the peer closed; empty at the end.
    func receive(_ count: Int = 65536) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return got > 0 ? Array(buffer[..<got]) : []
    }

    /// Exactly `count` bytes, or `nil` when the peer closed first.
    func receiveExactly(_ count: Int) -> [UInt8]? {
        var bytes: [UInt8] = []
        while bytes.count < count {
            let piece = receive(count - bytes.count)
            if piece.isEmpty { return nil }
            bytes += piece
        }
        return bytes
    }

    /// Everything until the peer closes.
    func receiveAll() -> [UInt8] {
        var bytes: [UInt8] = []
        while true {
            let piece = receive()
            if piece.isEmpty { return bytes }
            bytes += piece
        }
    }

    /// Reads up to the end of an HTTP head; returns its status and the bytes after it.
    func receiveHead() throws -> (status: Int, head: String) {
        var bytes: [UInt8] = []
        while find([13, 10, 13, 10], in: bytes, from: 0) == nil {
            let piece = receive(1)
            if piece.isEmpty { break }
            bytes += piece
        }
        let head = String(decoding: bytes, as: UTF8.self)
        guard let line = head.split(separator: "\r\n").first, let status = Int(line.split(separator: " ").dropFirst().first ?? "") else {
            throw TestFailure("no HTTP status line in \(head.prefix(200))")
        }
        return (status, head)
    }
}

/// A raw HTTP exchange: what nginx answers to bytes no client library would send.
struct RawAnswer {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]

    init(port: Int, request: String) throws {
        try self.init(port: port, request: Array(request.utf8))
    }

    init(port: Int, request: [UInt8], from source: String? = nil) throws {
        let connection = try RawConnection(port: port, from: source)
        try connection.send(request)
        let bytes = connection.receiveAll()
        guard let split = find([13, 10, 13, 10], in: bytes, from: 0) else { throw TestFailure("no HTTP head in \(String(decoding: bytes, as: UTF8.self))") }
        let head = String(decoding: bytes[..<split.lowerBound], as: UTF8.self).split(separator: "\r\n")
        guard let status = Int(head.first?.split(separator: " ").dropFirst().first ?? "") else { throw TestFailure("no status in \(head.first ?? "")") }
        self.status = status
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            let pair = line.split(separator: ":", maxSplits: 1)
            if pair.count == 2 { headers[pair[0].lowercased()] = pair[1].trimmingCharacters(in: .whitespaces) }
        }
        self.headers = headers
        var body = Array(bytes[split.upperBound...])
        if headers["transfer-encoding"] == "chunked" { body = Self.dechunk(body) }
        self.body = body
    }

    static func dechunk(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while let lineEnd = find([13, 10], in: bytes, from: index) {
            guard let size = Int(String(decoding: bytes[index..<lineEnd.lowerBound], as: UTF8.self), radix: 16), size > 0 else { break }
            out += bytes[lineEnd.upperBound..<min(lineEnd.upperBound + size, bytes.count)]
            index = lineEnd.upperBound + size + 2
        }
        return out
    }
}

/// One WebSocket frame as a client (masked) or a misbehaving one would send it.
func webSocketFrame(opcode: UInt8, payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true) -> [UInt8] {
    var frame: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
    let maskBit: UInt8 = masked ? 0x80 : 0
    if payload.count < 126 {
        frame.append(maskBit | UInt8(payload.count))
    } else if payload.count <= 0xFFFF {
        frame.append(maskBit | 126)
        frame += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
    } else {
        frame.append(maskBit | 127)
        frame += (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
    }
    if masked {
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame += key
        frame += payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
    } else {
        frame += payload
    }
    return frame
}

extension RawConnection {
    /// Reads server frames until a close frame; returns its status code, `nil` for a close
    /// without one, and throws when the connection ended with no close frame at all.
    func closeCode() throws -> UInt16? {
        while true {
            let (opcode, payload) = try nextFrame()
            if opcode == 0x8 {
                return payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
            }
        }
    }

    /// The codes of every close frame until the connection ends (`nil` for one without a code).
    func closeCodesUntilTheEnd() throws -> [UInt16?] {
        var codes: [UInt16?] = []
        while let header = receiveExactly(2) {
            var length = Int(header[1] & 0x7F)
            if length == 126, let extended = receiveExactly(2) { length = Int(extended[0]) << 8 | Int(extended[1]) }
            if length == 127, let extended = receiveExactly(8) { length = extended.reduce(0) { $0 << 8 | Int($1) } }
            guard let payload = receiveExactly(length) else { break }
            if header[0] & 0x0F == 0x8 { codes.append(payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil) }
        }
        return codes
    }

    /// The next text frame's text, skipping pings; throws at a close frame or the end.
    func nextText() throws -> String {
        while true {
            let (opcode, payload) = try nextFrame()
            if opcode == 0x1 { return String(decoding: payload, as: UTF8.self) }
            if opcode == 0x8 { throw TestFailure("closed instead: \(payload.prefix(2).map { $0 })") }
        }
    }

    /// One server frame (unmasked): its opcode and payload.
    func nextFrame() throws -> (opcode: UInt8, payload: [UInt8]) {
        guard let header = receiveExactly(2) else { throw TestFailure("the connection ended without a close frame") }
        var length = Int(header[1] & 0x7F)
        if length == 126, let extended = receiveExactly(2) { length = Int(extended[0]) << 8 | Int(extended[1]) }
        if length == 127, let extended = receiveExactly(8) { length = extended.reduce(0) { $0 << 8 | Int($1) } }
        guard let payload = receiveExactly(length) else { throw TestFailure("the connection ended inside a frame") }
        return (header[0] & 0x0F, payload)
    }
}

/// Where `pattern` first occurs in `bytes` at or after `start`.
func find(_ pattern: [UInt8], in bytes: [UInt8], from start: Int) -> Range<Int>? {
    guard !pattern.isEmpty, bytes.count >= pattern.count, start <= bytes.count - pattern.count else { return nil }
    for index in start...(bytes.count - pattern.count) where bytes[index..<index + pattern.count].elementsEqual(pattern) {
        return index..<index + pattern.count
    }
    return nil
}
