/// Where a request came to, for answers that must name the gateway absolutely (the tool
/// document's server, a tool call's image URLs) when `SERVER_BASE_URL` is not set.
extension GatewayRequest {
    /// `scheme://host[:port]` the request came to. Only a plain host[:port] is echoed back: an
    /// answer is no place for a forged header.
    var origin: String {
        let host = self.host.flatMap { Self.isPlainHost($0) ? $0 : nil } ?? "localhost"
        return "\(scheme == "https" ? "https" : "http")://\(host)"
    }

    /// `name[:port]` of letters, digits, `.`, `-` and `_` (a Compose service's name), or a
    /// bracketed IPv6 literal with a port.
    static func isPlainHost(_ host: String) -> Bool {
        guard (1...255).contains(host.utf8.count) else { return false }
        var name = Substring(host)
        if name.hasPrefix("[") {
            guard let close = name.firstIndex(of: "]") else { return false }
            let literal = name[name.index(after: name.startIndex)..<close]
            guard !literal.isEmpty, literal.utf8.allSatisfy({ $0 == 0x3A || $0 == 0x2E || (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || (0x41...0x46).contains($0) }) else { return false }
            name = name[name.index(after: close)...]
            guard name.isEmpty || name.hasPrefix(":") else { return false }
            return name.dropFirst().allSatisfy(\.isASCII) && name.dropFirst().allSatisfy(\.isNumber)
        }
        let parts = name.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let label = parts.first, !label.isEmpty,
            label.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) || (0x41...0x5A).contains($0) || $0 == 0x2E || $0 == 0x2D || $0 == 0x5F })
        else { return false }
        return parts.count == 1 || (!parts[1].isEmpty && parts[1].utf8.count <= 5 && parts[1].utf8.allSatisfy { (0x30...0x39).contains($0) })
    }
}
