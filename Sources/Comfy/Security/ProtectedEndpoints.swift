import Foundation

/// Services a caller's URL (an input image, a webhook) may never reach, whatever
/// `*_ALLOW_PRIVATE` says: the gateway's own ComfyUI backends, and its own front door.
///
/// ComfyUI trusts whoever reaches it, and the gateway does: a ComfyUI on a public address that
/// only the gateway may reach, or one on the network `*_ALLOW_PRIVATE` opens, would otherwise
/// answer a caller's `GET /view?filename=<another caller's image>` as an input image, or a
/// webhook's `POST /interrupt`, which stops whatever runs there. An endpoint is reached by its
/// own addresses, and, on its port, by any address of this machine (loopback, `0.0.0.0`, its
/// interfaces' addresses).
public struct ProtectedEndpoints: Sendable {
    struct Endpoint: Sendable, Hashable {
        var host: String
        var port: Int
    }

    let endpoints: [Endpoint]

    public static let none = ProtectedEndpoints(endpoints: [])

    init(endpoints: [Endpoint]) {
        self.endpoints = endpoints
    }

    /// - Parameters:
    ///   - backends: the ComfyUI servers.
    ///   - ownPort: the port nginx listens on (this machine's).
    public init(backends: [ComfyServerURL], ownPort: Int?) {
        endpoints = backends.map { Endpoint(host: $0.host, port: $0.port) } + (ownPort.map { [Endpoint(host: "localhost", port: $0)] } ?? [])
    }

    /// Whether an endpoint listens on `port` (else `covers` is false without a lookup).
    func guards(port: Int) -> Bool {
        endpoints.contains { $0.port == port }
    }

    /// Whether connecting to one of `addresses` on `port` may reach a protected endpoint.
    /// Blocking (lookups): call it off the cooperative pool. An endpoint whose name does not
    /// resolve now is not compared: the gateway could not reach it by that name either.
    func covers(_ addresses: [ResolvedAddress], port: Int) -> Bool {
        let onPort = endpoints.filter { $0.port == port }
        guard !onPort.isEmpty else { return false }
        let targets = Set(addresses.map(\.comparable))
        if addresses.contains(where: \.isThisMachine) { return true }
        if !targets.isDisjoint(with: Self.interfaceAddresses()) { return true }
        return onPort.contains { endpoint in
            !targets.isDisjoint(with: resolveAddresses(endpoint.host, port: endpoint.port).map(\.comparable))
        }
    }

    /// This machine's interface addresses (`getifaddrs`).
    static func interfaceAddresses() -> Set<[UInt8]> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses = Set<[UInt8]>()
        var node = list
        while let entry = node?.pointee {
            defer { node = entry.ifa_next }
            guard let address = entry.ifa_addr else { continue }
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                var raw = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                addresses.insert(withUnsafeBytes(of: &raw) { Array($0) })
            case AF_INET6:
                var raw = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                addresses.insert(ResolvedAddress(family: AF_INET6, bytes: withUnsafeBytes(of: &raw) { Array($0) }, text: "").comparable)
            default:
                continue
            }
        }
        return addresses
    }
}

extension ResolvedAddress {
    /// The IPv4 address an IPv6 one stands for or leads to (IPv4-mapped, NAT64's 64:ff9b::/96,
    /// 6to4's 2002::/16), else its own bytes.
    var comparable: [UInt8] {
        guard bytes.count == 16 else { return bytes }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return Array(bytes[12...]) }
        if bytes[0..<4] == [0x00, 0x64, 0xFF, 0x9B], bytes[4..<12].allSatisfy({ $0 == 0 }) { return Array(bytes[12...]) }
        if bytes[0] == 0x20, bytes[1] == 0x02 { return Array(bytes[2..<6]) }
        return bytes
    }

    /// Loopback or unspecified (`0.0.0.0` and `::` connect to this machine).
    var isThisMachine: Bool {
        let address = comparable
        if address.count == 4 { return address[0] == 127 || address[0] == 0 }
        return address[0..<15].allSatisfy { $0 == 0 } && (address[15] == 0 || address[15] == 1)
    }
}
