import Foundation

/// Sends a WebSocket upgrade request with exactly the given headers (a browser's `Origin` and
/// `Host` included) over a plain TCP connection, and returns the status of the answer.
func upgradeStatus(port: Int, path: String, headers: [(String, String)]) throws -> Int {
    let connection = try RawConnection(port: port)
    var request = "GET \(path) HTTP/1.1\r\n"
    let upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    for (name, value) in upgrade + headers { request += "\(name): \(value)\r\n" }
    request += "\r\n"
    try connection.send(request)
    return try connection.receiveHead().status
}

/// Sends a plain GET over TCP and records each piece of the answer with its arrival time,
/// until the server closes: what a streaming client sees, unbuffered.
func streamedArrivals(port: Int, path: String, timeout: Int = 30) throws -> [(at: ContinuousClock.Instant, text: String)] {
    let connection = try RawConnection(port: port, timeoutSeconds: timeout)
    try connection.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n")
    var arrivals: [(at: ContinuousClock.Instant, text: String)] = []
    while true {
        let piece = connection.receive()
        guard !piece.isEmpty else { break }
        arrivals.append((.now, String(decoding: piece, as: UTF8.self)))
    }
    return arrivals
}
