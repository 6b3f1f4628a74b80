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

extension WorkflowTool.CallError: APIErrorConvertible {
    var apiError: APIError { APIError(.invalidParameter, message, details: ["parameter": .string(parameter)]) }
}

extension InputImageError: APIErrorConvertible {
    var apiError: APIError {
        let details: [String: JSONValue] = ["parameter": .string(field)]
        switch kind {
        case .invalid, .refused: return APIError(.invalidParameter, message, details: details)
        case .tooLarge: return APIError(.payloadTooLarge, message, details: details)
        case .unreachable: return APIError(.inputUnavailable, message, details: details)
        case .busy:
            var error = APIError(.busy, message, details: details)
            error.headers = [("Retry-After", "5")]
            return error
        }
    }
}

extension JobCrashLimitReached: APIErrorConvertible {
    var apiError: APIError { APIError(.internalError, description) }
}

extension ImageTranscoder.Failure: APIErrorConvertible {
    var apiError: APIError { APIError(.internalError, description) }
}

extension StorageError: APIErrorConvertible {
    var apiError: APIError {
        var details: [String: JSONValue] = ["store": .string(store)]
        details["local_url"] = localURL.map(JSONValue.string)
        return APIError(.storageFailed, "storing the image failed: \(self)", details: details)
    }
}

extension JobStoreError: APIErrorConvertible {
    var apiError: APIError {
        switch kind {
        case .idempotencyKeyReused:
            return APIError(.idempotencyKeyReused, message)
        case .keyExists:
            return APIError(.invalidRequest, message)
        case .unfinishedLimitReached:
            var error = APIError(.quotaExceeded, message)
            error.headers = [("Retry-After", "5")]
            return error
        case .keyRevoked:
            return APIKeyGate.unauthorized(message)
        case .unavailable, .newerSchema:
            var error = APIError(.storeUnavailable, "the job store is unavailable; nothing was stored (\(message))")
            error.headers = [("Retry-After", "5")]
            return error
        }
    }
}

extension OutboundURL.Refusal: APIErrorConvertible {
    var apiError: APIError {
        guard busy else { return APIError(.invalidRequest, description, details: ["field": .string(field)]) }
        var error = APIError(.busy, description, details: ["field": .string(field)])
        error.headers = [("Retry-After", "5")]
        return error
    }
}

/// The API's error answer for anything a job can fail with.
func apiError(for error: any Error) -> APIError {
    (error as? any APIErrorConvertible)?.apiError ?? APIError(.internalError, "internal error")
}
