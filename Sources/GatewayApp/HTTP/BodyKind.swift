/// The body a route takes; anything else is refused with 415 before the handler runs, so a
/// browser's preflight-free `text/plain` or form post never starts a job.
enum BodyKind: Sendable {
    case json
    case multipart
    /// JSON, or a form with files (a Dify HTTP node's file variable): a cross-site form post
    /// carries an `Origin`, which `CrossOriginPolicy` refuses.
    case jsonOrMultipart

    /// The media types accepted, for the error message.
    var mediaType: String {
        switch self {
        case .json: "application/json"
        case .multipart: "multipart/form-data"
        case .jsonOrMultipart: "application/json or multipart/form-data"
        }
    }

    /// Whether a `Content-Type` header value names this kind (parameters such as `charset` are fine).
    func accepts(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let type = contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        switch self {
        case .json, .multipart: return type == mediaType
        case .jsonOrMultipart: return type == "application/json" || type == "multipart/form-data"
        }
    }
}
