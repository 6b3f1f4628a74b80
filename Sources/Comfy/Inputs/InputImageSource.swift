import Foundation

/// How a call hands over an input image: a URL to fetch, or the bytes themselves as a data URL
/// or bare base64. Never a file name: names reach ComfyUI's disk, bytes do not.
public enum InputImageSource: Sendable, Equatable {
    case url(String)
    case bytes([UInt8])

    /// Reads `value`; `maxBytes` bounds the decoded size before anything is decoded.
    public static func parse(_ value: String, field: String, maxBytes: Int) throws(InputImageError) -> InputImageSource {
        let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
        let lowered = trimmed.prefix(8).lowercased()
        if lowered.hasPrefix("https://") || lowered.hasPrefix("http://") { return .url(trimmed) }
        var encoded = Substring(trimmed)
        if lowered.hasPrefix("data:") {
            guard let comma = encoded.firstIndex(of: ","), encoded[..<comma].lowercased().hasSuffix(";base64") else {
                throw InputImageError(.invalid, field: field, "\(field) is a data URL without ;base64 data")
            }
            encoded = encoded[encoded.index(after: comma)...]
        }
        guard !encoded.isEmpty else { throw InputImageError(.invalid, field: field, "\(field) is empty") }
        // Four characters carry three bytes: refuse before decoding anything too large.
        guard encoded.utf8.count / 4 * 3 <= maxBytes + 3 else {
            throw InputImageError(.tooLarge, field: field, "\(field) is larger than \(maxBytes) bytes")
        }
        let compact = encoded.filter { !$0.isWhitespace }
        guard let data = Data(base64Encoded: String(compact)) ?? Data(base64Encoded: Self.standardAlphabet(compact)) else {
            throw InputImageError(.invalid, field: field, "\(field) is not an http(s) URL, a data URL or base64 image data")
        }
        return .bytes(Array(data))
    }

    /// base64url without padding, as some clients send it, in the standard alphabet.
    private static func standardAlphabet(_ text: String) -> String {
        var standard = String(text.map { $0 == "-" ? "+" : $0 == "_" ? "/" : $0 })
        while standard.utf8.count % 4 != 0 { standard += "=" }
        return standard
    }
}
