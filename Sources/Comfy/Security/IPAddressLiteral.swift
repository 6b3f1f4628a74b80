import Foundation

/// Whether `text` is an IPv4 or IPv6 address (bracketed, as a URL or a `Host` writes it, or
/// bare): a name no DNS answer stands behind.
func isIPAddressLiteral(_ text: some StringProtocol) -> Bool {
    var bytes = (UInt64(0), UInt64(0))
    if text.first == "[", text.last == "]" {
        return String(text.dropFirst().dropLast()).withCString { inet_pton(AF_INET6, $0, &bytes) } == 1
    }
    return String(text).withCString { inet_pton(AF_INET, $0, &bytes) == 1 || inet_pton(AF_INET6, $0, &bytes) == 1 }
}
