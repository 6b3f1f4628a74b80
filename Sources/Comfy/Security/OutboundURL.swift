import Foundation
import NIOPosix

/// A URL the gateway itself will call (a webhook, an input image), checked against server-side
/// request forgery: http(s) only, no credentials, by default no loopback, private, link-local
/// or other non-public address, whatever name it is reached by, and never the gateway's own
/// ComfyUI servers (`ProtectedEndpoints`). The address approved is the one curl connects to
/// (`resolve`), without a proxy.
public struct OutboundURL: Sendable {
    public static let maxLength = 2048

    public let url: String
    /// `+host:port:address` for `CurlRequest.resolve` (none for an address literal, which curl
    /// does not look up). The `+` lets the entry age out of the reused curl handle's DNS cache:
    /// without it, each host ever called stayed there for the process's life.
    public let resolve: [String]

    /// Why a URL may not be called.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        /// The request field that held the URL.
        public var field: String
        public var description: String
        /// Not the URL's fault: no place for its host's lookup came in time (`OwnerShares`).
        public var busy: Bool

        public init(field: String, description: String, busy: Bool = false) {
            self.field = field
            self.description = description
            self.busy = busy
        }
    }

    /// Parses and checks `url`; resolves its host (off the cooperative pool). `field` and
    /// `allowVariable` name the request field and the setting in refusals. `owner`: whose URL it
    /// is (a key, a client address), for their share of the lookups (`OwnerShares`).
    public static func check(
        _ url: String, allowPrivate: Bool, protected: ProtectedEndpoints = .none, owner: String? = nil, field: String = "webhook_url",
        allowVariable: String = "WEBHOOK_ALLOW_PRIVATE", resolveTimeout: Duration = .seconds(5)
    ) async throws -> OutboundURL {
        guard url.utf8.count <= maxLength else { throw Refusal(field: field, description: "\(field) is longer than \(maxLength) bytes") }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https" else {
            throw Refusal(field: field, description: "\(field) must be an http or https URL")
        }
        guard let host = components.host, !host.isEmpty else { throw Refusal(field: field, description: "\(field) has no host") }
        guard components.user == nil, components.password == nil else { throw Refusal(field: field, description: "\(field) may not carry a user or password") }
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw Refusal(field: field, description: "\(field) may hold only printable ASCII") }
        let port = components.port ?? (scheme == "https" ? 443 : 80)
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        // An address literal asks no DNS server: it takes no share of the lookups, and no pin
        // (curl connects to it without a lookup; `CURLOPT_RESOLVE` reads a host only up to its
        // first colon).
        let literal = isIPAddressLiteral(bareHost)
        guard let addresses = await resolve(bareHost, port: port, timeout: resolveTimeout, owner: literal ? nil : owner) else {
            throw Refusal(
                field: field, description: "\(field)'s host \(host) could not be looked up in time: host lookups of yours, or of many callers, are still running; try again shortly",
                busy: true
            )
        }
        // One answer for a name that does not resolve and one that is private: the refusal must
        // not map the internal network for the caller.
        let refusal = Refusal(
            field: field,
            description: "\(field)'s host \(host) does not resolve to an address the gateway calls (a public one: loopback, private and link-local ones need \(allowVariable)=true; never its own ComfyUI servers)"
        )
        guard let first = addresses.first else { throw refusal }
        if !allowPrivate, addresses.contains(where: { !$0.isPublic }) { throw refusal }
        if protected.guards(port: port) {
            let covered = { @Sendable in try await lookUp { protected.covers(addresses, port: port) } }
            // Not told in time: not called.
            guard try await withAbandonableDeadline(.now + resolveTimeout, timeout: { refusal }, covered) == false else { throw refusal }
        }
        if literal { return OutboundURL(url: url, resolve: []) }
        let pinned = first.family == AF_INET6 ? "[\(first.text)]" : first.text
        return OutboundURL(url: url, resolve: ["+\(bareHost):\(port):\(pinned)"])
    }

    /// Sets the request up to reach what was checked: the approved address, and no proxy from
    /// the environment (it would look the name up again).
    public func pin(_ request: inout CurlRequest) {
        request.resolve = resolve
        request.direct = true
    }

}

extension OutboundURL {
    /// Lookups of callers' host names: their own threads, so that a slow DNS server holds none
    /// of NIO's, and a deadline, so that it holds no request longer than `timeout`. A lookup
    /// that never answers holds its thread for the resolver's own time (`getaddrinfo` cannot be
    /// interrupted), so callers' lookups are shared out (`lookups`): else one caller's domains
    /// timing out would fill every thread, and every other caller's URLs and webhooks would
    /// fail their checks. The threads `lookups` leaves look up the gateway's own backends' names
    /// (`ProtectedEndpoints`).
    static let resolverPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 32)
        pool.start()
        return pool
    }()

    static let lookups = OwnerShares(perOwner: 4, capacity: 24)

    /// Runs a lookup on the resolver's threads, to its end: `getaddrinfo` cannot be interrupted,
    /// and the pool's async form, cancelled while its work runs, keeps the work's id for good
    /// (swift-nio), one per lookup given up at its deadline.
    static func lookUp<T: Sendable>(_ body: @escaping @Sendable () -> T) async throws -> T {
        try await resolverPool.runIfActive(eventLoop: MultiThreadedEventLoopGroup.singleton.any(), body).get()
    }

    /// Every address of `host`, or none when the lookup fails or outlasts `timeout` (the lookup
    /// itself cannot be interrupted; it finishes on its thread and is dropped); `nil` when no
    /// place for `owner`'s lookup came within `timeout` (no owner: no place taken).
    static func resolve(_ host: String, port: Int, timeout: Duration, owner: String? = nil) async -> [ResolvedAddress]? {
        let deadline = ContinuousClock.now + timeout
        let owner = owner.map(AddressShare.name(of:))
        if let owner, await !lookups.acquire(owner, by: deadline) { return nil }
        let lookup = { @Sendable in
            // Once its thread is done: past the deadline too.
            defer { if let owner { lookups.done(owner) } }
            return try await lookUp { resolveAddresses(host, port: port) }
        }
        return (try? await withAbandonableDeadline(deadline, timeout: { CancellationError() }, lookup)) ?? []
    }
}

/// One resolved address.
struct ResolvedAddress: Sendable {
    var family: Int32
    var bytes: [UInt8]
    var text: String

    /// A globally routable unicast address.
    var isPublic: Bool {
        if family == AF_INET { return Self.isPublicIPv4(bytes) }
        if bytes.count == 16 {
            // IPv4-mapped (::ffff:a.b.c.d): the IPv4 rules.
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF { return Self.isPublicIPv4(Array(bytes[12...])) }
            // ::, ::1, IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d): none is routed.
            if bytes[0..<12].allSatisfy({ $0 == 0 }) { return false }
            if bytes[0..<8].allSatisfy({ $0 == 0 }) && bytes[8] == 0xFF && bytes[9] == 0xFF && bytes[10] == 0 && bytes[11] == 0 { return false }
            if bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80 { return false }  // fe80::/10 link-local
            if bytes[0] == 0xFE && bytes[1] & 0xC0 == 0xC0 { return false }  // fec0::/10 site-local (deprecated, still routed where set up)
            if bytes[0] & 0xFE == 0xFC { return false }  // fc00::/7 unique local
            if bytes[0] == 0xFF { return false }  // multicast
            if bytes[0] == 0x01 && bytes[1] == 0x00 && bytes[2..<8].allSatisfy({ $0 == 0 }) { return false }  // 100::/64 discard
            if bytes[0] == 0x20 && bytes[1] == 0x01 && bytes[2] == 0x0D && bytes[3] == 0xB8 { return false }  // documentation
            // 2001::/23, IETF protocol assignments: Teredo (its IPv4 hidden), benchmarking, ORCHID.
            if bytes[0] == 0x20 && bytes[1] == 0x01 && bytes[2] & 0xFE == 0 { return false }
            // 6to4 (2002:a.b.c.d::/48) reaches the IPv4 address it embeds.
            if bytes[0] == 0x20 && bytes[1] == 0x02 { return Self.isPublicIPv4(Array(bytes[2..<6])) }
            if bytes[0] == 0x00 && bytes[1] == 0x64 && bytes[2] == 0xFF && bytes[3] == 0x9B {
                // NAT64: the well-known 64:ff9b::/96 reaches the IPv4 address it embeds; 64:ff9b:1::/48 is local use.
                return bytes[4..<12].allSatisfy({ $0 == 0 }) && Self.isPublicIPv4(Array(bytes[12...]))
            }
            return true
        }
        return false
    }

    static func isPublicIPv4(_ b: [UInt8]) -> Bool {
        guard b.count == 4 else { return false }
        switch (b[0], b[1]) {
        case (0, _), (10, _), (127, _): return false
        case (100, 64...127): return false  // carrier-grade NAT
        case (169, 254): return false  // link-local, cloud metadata
        case (172, 16...31): return false
        case (192, 168): return false
        case (192, 0) where b[2] == 0 || b[2] == 2: return false
        case (192, 88) where b[2] == 99: return false  // 6to4 relay anycast
        case (168, 63) where b[2] == 129 && b[3] == 16: return false  // Azure's host services (WireServer)
        case (198, 18...19): return false
        case (198, 51) where b[2] == 100: return false
        case (203, 0) where b[2] == 113: return false
        case (224...255, _): return false  // multicast, reserved, broadcast
        default: return true
        }
    }
}

/// `getaddrinfo`, every address of the host (blocking: call it off the cooperative pool).
func resolveAddresses(_ host: String, port: Int) -> [ResolvedAddress] {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, "\(port)", &hints, &list) == 0 else { return [] }
    defer { freeaddrinfo(list) }
    var addresses: [ResolvedAddress] = []
    var node = list
    while let entry = node?.pointee {
        defer { node = entry.ai_next }
        guard let socketAddress = entry.ai_addr else { continue }
        var bytes: [UInt8]
        switch entry.ai_family {
        case AF_INET:
            var address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            bytes = withUnsafeBytes(of: &address) { Array($0) }
        case AF_INET6:
            var address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            bytes = withUnsafeBytes(of: &address) { Array($0) }
        default:
            continue
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = bytes.withUnsafeBytes { inet_ntop(entry.ai_family, $0.baseAddress, &text, socklen_t(text.count)) }
        let printed = text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        addresses.append(ResolvedAddress(family: entry.ai_family, bytes: bytes, text: String(decoding: printed, as: UTF8.self)))
    }
    return addresses
}
