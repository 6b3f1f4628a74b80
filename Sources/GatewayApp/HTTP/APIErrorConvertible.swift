import Comfy

/// An error that knows its API answer: status, code and details. The router turns any of them
/// into a JSON error body, so each area's mapping lives beside its `APIError` initialiser.
protocol APIErrorConvertible: Error {
    var apiError: APIError { get }
}

extension APIError: APIErrorConvertible {
    var apiError: APIError { self }
}

extension ComfyError: APIErrorConvertible {
    var apiError: APIError { APIError(self) }
}

extension DrawingError: APIErrorConvertible {
    var apiError: APIError { APIError(self) }
}

extension WorkflowRejection: APIErrorConvertible {
    var apiError: APIError { APIError(self) }
}

extension StorageError: APIErrorConvertible {
    var apiError: APIError {
        var details: [String: JSONValue] = ["store": .string(store)]
        details["local_url"] = localURL.map(JSONValue.string)
        return APIError(.storageFailed, "storing the image failed: \(self)", details: details)
    }
}
