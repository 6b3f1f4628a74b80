/// Why one upload attempt to an object store failed, and whether another attempt may help.
struct UploadFailure: Error, Sendable, CustomStringConvertible {
    var message: String
    /// What a caller is told: the status and the store's error code, without the store's own
    /// words (an access error's names the account and principal) or curl's (the endpoint).
    var summary: String
    /// Network errors, timeouts, 429 and 5xx are worth retrying; other answers are not.
    var retryable: Bool

    var description: String { message }

    /// A non-2xx answer: its status and the store's own error code (`<Code>` of the XML body).
    init(status: Int, body: [UInt8]) {
        let text = String(decoding: body.prefix(4096), as: UTF8.self)
        var message = "HTTP \(status)"
        if let code = Self.element("Code", in: text) { message += " \(code)" }
        summary = message
        if let detail = Self.element("Message", in: text) { message += ": \(detail)" }
        self.message = message
        retryable = status == 429 || status >= 500
    }

    /// No answer at all: connection refused, reset, timed out.
    init(_ error: CurlError) {
        message = error.message
        summary = error.kind == .timedOut ? "no answer in time" : "no answer"
        retryable = error.kind != .cancelled && error.kind != .responseTooLarge
    }

    init(message: String, retryable: Bool, summary: String? = nil) {
        self.message = message
        self.summary = summary ?? message
        self.retryable = retryable
    }

    /// The text of the first `<name>...</name>` element, short and on one line.
    private static func element(_ name: String, in text: String) -> String? {
        guard let start = text.range(of: "<\(name)>"), let end = text.range(of: "</\(name)>", range: start.upperBound..<text.endIndex) else { return nil }
        let value = text[start.upperBound..<end.lowerBound].split(whereSeparator: \.isNewline).joined(separator: " ")
        return value.isEmpty ? nil : String(value.prefix(200))
    }
}
