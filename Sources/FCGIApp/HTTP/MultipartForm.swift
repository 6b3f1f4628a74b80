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
        guard let boundary = Self.parameter("boundary", in: contentType), !boundary.isEmpty, boundary.count <= 200 else {
            throw APIError(.invalidRequest, "multipart/form-data without a boundary")
        }
        let delimiter = Array("--\(boundary)".utf8)
        var positions: [Int] = []
        var searchFrom = 0
        while let found = body.firstRange(of: delimiter, from: searchFrom) {
            positions.append(found.lowerBound)
            searchFrom = found.upperBound
        }
        guard positions.count >= 2 else { throw APIError(.invalidRequest, "malformed multipart body") }
        var parts: [Part] = []
        for (start, end) in zip(positions, positions.dropFirst()) {
            var partStart = start + delimiter.count
            // Each part starts after CRLF and ends before the CRLF preceding the next delimiter.
            guard body[partStart..<min(partStart + 2, body.count)].elementsEqual([13, 10]) else {
                throw APIError(.invalidRequest, "malformed multipart body")
            }
            partStart += 2
            let partEnd = end - 2
            guard partEnd >= partStart, let headerEnd = body.firstRange(of: [13, 10, 13, 10], from: partStart), headerEnd.lowerBound <= partEnd else {
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

extension Array where Element == UInt8 {
    func firstRange(of pattern: [UInt8], from start: Int) -> Range<Int>? {
        guard !pattern.isEmpty, count >= pattern.count, start <= count - pattern.count else { return nil }
        let first = pattern[0]
        var index = start
        while index <= count - pattern.count {
            if self[index] == first, self[index..<index + pattern.count].elementsEqual(pattern) {
                return index..<index + pattern.count
            }
            index += 1
        }
        return nil
    }
}

import Foundation
