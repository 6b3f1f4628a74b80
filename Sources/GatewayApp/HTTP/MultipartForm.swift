/// A parsed `multipart/form-data` body (RFC 7578).
struct MultipartForm {
    /// One field of the form.
    struct Part {
        var name: String
        var filename: String?
        var contentType: String?
        var body: [UInt8]
    }

    var parts: [Part]

    func part(_ name: String) -> Part? { parts.first { $0.name == name } }

    /// A text field's value.
    func text(_ name: String) -> String? { part(name).map { String(decoding: $0.body, as: UTF8.self) } }

    init(body: [UInt8], contentType: String?, maxParts: Int = 16) throws(APIError) {
        guard let contentType, contentType.lowercased().hasPrefix("multipart/form-data") else {
            throw APIError(.unsupportedMediaType, "send multipart/form-data with a file field")
        }
        // RFC 2046: a boundary has 1 to 70 characters (it also bounds the search below).
        guard let boundary = Self.parameter("boundary", in: contentType), !boundary.isEmpty else {
            throw APIError(.invalidRequest, "multipart/form-data without a boundary")
        }
        guard boundary.utf8.count <= 70 else {
            throw APIError(.invalidRequest, "the multipart boundary has \(boundary.utf8.count) characters; RFC 2046 allows 1 to 70")
        }
        let delimiter = Array("--\(boundary)".utf8)
        var positions: [Int] = []
        var searchFrom = 0
        while let found = body.firstRange(of: delimiter, from: searchFrom) {
            positions.append(found.lowerBound)
            searchFrom = found.upperBound
            guard positions.count <= maxParts + 1 else { throw APIError(.invalidRequest, "too many multipart parts") }
        }
        guard positions.count >= 2 else { throw APIError(.invalidRequest, "malformed multipart body") }
        // The last delimiter must be the closing one (`--boundary--`): a body cut short is refused, not read in part.
        let closing = positions[positions.count - 1] + delimiter.count
        guard body[closing..<min(closing + 2, body.count)].elementsEqual([UInt8(ascii: "-"), UInt8(ascii: "-")]) else {
            throw APIError(.invalidRequest, "the multipart body has no closing boundary (--\(boundary)--); it may have been cut short")
        }
        var parts: [Part] = []
        for (start, end) in zip(positions, positions.dropFirst()) {
            var partStart = start + delimiter.count
            // Each part starts after CRLF and ends before the CRLF preceding the next delimiter.
            guard body[partStart..<min(partStart + 2, body.count)].elementsEqual([13, 10]) else {
                throw APIError(.invalidRequest, "malformed multipart body")
            }
            partStart += 2
            let partEnd = end - 2
            guard partEnd >= partStart, body[partEnd..<end].elementsEqual([13, 10]),
                  let headerEnd = body.firstRange(of: [13, 10, 13, 10], from: partStart), headerEnd.upperBound <= partEnd
            else {
                throw APIError(.invalidRequest, "malformed multipart part")
            }
            let headerText = String(decoding: body[partStart..<headerEnd.lowerBound], as: UTF8.self)
            var disposition = ""
            var type: String?
            for line in headerText.split(separator: "\r\n") {
                let pieces = line.split(separator: ":", maxSplits: 1)
                guard pieces.count == 2 else { continue }
                let value = pieces[1].trimmingCharacters(in: .whitespaces)
                switch pieces[0].lowercased() {
                case "content-disposition": disposition = value
                case "content-type": type = value
                default: break
                }
            }
            guard let name = Self.parameter("name", in: disposition) else { throw APIError(.invalidRequest, "multipart part without a name") }
            // As for JSON members: a field sent twice is refused, not resolved one way or the other.
            guard !parts.contains(where: { $0.name == name }) else {
                throw APIError(.invalidRequest, "the multipart field \"\(name.prefix(64))\" appears twice")
            }
            parts.append(Part(name: name, filename: Self.parameter("filename", in: disposition), contentType: type, body: Array(body[headerEnd.upperBound..<partEnd])))
            guard parts.count <= maxParts else { throw APIError(.invalidRequest, "too many multipart parts") }
        }
        self.parts = parts
    }

    /// A `name=value` or `name="value"` parameter of a header value.
    static func parameter(_ name: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let pair = piece.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == name else { continue }
            var value = pair[1].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            return value
        }
        return nil
    }
}

import Foundation

extension Array where Element == UInt8 {
    /// Where `pattern` first occurs at or after `start` (Boyer–Moore–Horspool: a mismatch on the
    /// window's last byte skips ahead, so a body made of the boundary's own bytes stays cheap).
    func firstRange(of pattern: [UInt8], from start: Int) -> Range<Int>? {
        let length = pattern.count
        guard length > 0, start >= 0, count - start >= length else { return nil }
        var skip = [Int](repeating: length, count: 256)
        for (index, byte) in pattern.dropLast().enumerated() { skip[Int(byte)] = length - 1 - index }
        return withUnsafeBufferPointer { text in
            pattern.withUnsafeBufferPointer { needle in
                var position = start
                while position <= text.count - length {
                    let last = text[position + length - 1]
                    if last == needle[length - 1], memcmp(text.baseAddress! + position, needle.baseAddress!, length) == 0 {
                        return position..<position + length
                    }
                    position += skip[Int(last)]
                }
                return nil
            }
        }
    }
}
