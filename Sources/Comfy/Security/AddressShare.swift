import Foundation

/// Whose share a client address counts toward in the limits per client: the address itself,
/// or an IPv6 address's /64 (one subscriber's whole network, which one attacker has; a home
/// network's addresses are there for the taking). An IPv4-mapped address is its IPv4 address.
public enum AddressShare {
    public static func name(of address: String) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        guard address.contains(":"), inet_pton(AF_INET6, address, &bytes) == 1 else { return address }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return bytes[12...].map(String.init).joined(separator: ".")
        }
        return bytes.prefix(8).map { String(format: "%02x", $0) }.joined() + "/64"
    }
}
