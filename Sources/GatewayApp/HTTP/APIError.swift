import Comfy

/// An error answer of the API: `{"error": {"code", "message", ...}}` with its HTTP status.
public struct APIError: Error, Sendable {
    /// The error kinds; `status` maps each to its HTTP status, in this one place.
    public enum Code: String, Sendable, CaseIterable {
        case invalidJSON = "invalid_json"
        case invalidRequest = "invalid_request"
        case unknownOutputNode = "unknown_output_node"
        /// A tool call's argument, or an input image, that is wrong; `parameter` names it.
        case invalidParameter = "invalid_parameter"
        /// An input image URL that gave no image (HTTP error, timeout, redirects).
        case inputUnavailable = "input_unavailable"
        /// A model the workflow names that no backend has.
        case modelNotFound = "model_not_found"
        case workflowInvalid = "workflow_invalid"
        case workflowRefused = "workflow_refused"
        case notFound = "not_found"
        case forbidden
        case methodNotAllowed = "method_not_allowed"
        case payloadTooLarge = "payload_too_large"
        case unsupportedMediaType = "unsupported_media_type"
        case busy
        case internalError = "internal"
        case executionFailed = "execution_failed"
        case storageFailed = "storage_failed"
        case backendUnavailable = "backend_unavailable"
        case timeout
        case jobFinished = "job_finished"
        case jobCancelled = "job_cancelled"
        case resultGone = "result_gone"
        case idempotencyKeyReused = "idempotency_key_reused"
        case storeUnavailable = "store_unavailable"
        case unauthorized
        case rateLimited = "rate_limited"
        case quotaExceeded = "quota_exceeded"
        /// A `Host` the gateway is not configured under (`HostPolicy`).
        case unknownHost = "unknown_host"

        public var status: Int {
            switch self {
            case .invalidJSON, .invalidRequest, .unknownOutputNode, .workflowInvalid, .workflowRefused, .invalidParameter, .inputUnavailable, .modelNotFound: 400
            case .unauthorized: 401
            case .forbidden: 403
            case .notFound: 404
            case .methodNotAllowed: 405
            case .jobFinished, .jobCancelled: 409
            case .resultGone: 410
            case .unknownHost: 421
            case .idempotencyKeyReused: 422
            case .payloadTooLarge: 413
            case .unsupportedMediaType: 415
            case .busy, .rateLimited, .quotaExceeded: 429
            case .internalError: 500
            case .executionFailed, .storageFailed: 502
            case .backendUnavailable, .storeUnavailable: 503
            case .timeout: 504
            }
        }
    }

    var code: Code
    var message: String
    /// Extra members of the `error` object (`node_id`, `backend`, `comfy`, ...).
    var details: [String: JSONValue] = [:]
    /// Members beside `error` at the top level (`node_errors`).
    var topLevel: [String: JSONValue] = [:]
    var headers: [(String, String)] = []

    public init(_ code: Code, _ message: String, details: [String: JSONValue] = [:]) {
        self.code = code
        self.message = message
        self.details = details
    }

    /// A request sent to a name the gateway is not configured under (`HostPolicy`).
    static func unknownHost(_ host: String?) -> APIError {
        let name = String(HostPolicy.withoutPort(host ?? "").prefix(100))
        return APIError(.unknownHost, "this gateway does not answer under the name \"\(name)\": set SERVER_BASE_URL to its public URL, or list the name in ALLOWED_HOSTS")
    }

    public var response: GatewayResponse {
        .json(body, status: code.status, headers: headers)
    }

    /// `{"error": {"code", "message", ...}, ...}`.
    var body: JSONValue {
        var error = details
        error["code"] = .string(code.rawValue)
        error["message"] = .string(message)
        var body = topLevel
        body["error"] = .object(error)
        return .object(body)
    }

    /// What a stored job keeps of this error: a later answer for the job is the same.
    var jobFailure: JobFailure {
        JobFailure(status: code.status, body: body)
    }

    /// The answer for a job that failed with `failure`, as the sync endpoints gave it.
    static func response(for failure: JobFailure) -> GatewayResponse {
        var headers: [(String, String)] = []
        if failure.status == 429 || failure.status == 503 { headers.append(("Retry-After", "5")) }
        return .json(failure.body, status: failure.status, headers: headers)
    }
}

extension APIError {
    /// The API's view of a backend failure; its message does not name the backend (`callerMessage`).
    init(_ error: ComfyError) {
        switch error.code {
        case .workflowInvalid:
            self.init(.workflowInvalid, error.callerMessage)
            if let comfy = error.comfyError { details["comfy"] = comfy }
            topLevel["node_errors"] = error.nodeErrors ?? .object([:])
        case .executionFailed:
            self.init(.executionFailed, error.callerMessage)
            details["node_id"] = error.failure?.nodeID.map(JSONValue.string) ?? .null
            details["node_type"] = error.failure?.nodeType.map(JSONValue.string) ?? .null
            details["exception_type"] = error.failure?.exceptionType.map(JSONValue.string) ?? .null
        case .interrupted, .noImage, .badResponse:
            self.init(.executionFailed, error.callerMessage)
        case .backendUnavailable, .promptLost:
            self.init(.backendUnavailable, error.callerMessage)
        case .timedOut:
            self.init(.timeout, error.callerMessage)
        case .busy:
            self.init(.busy, error.callerMessage)
            headers.append(("Retry-After", "5"))
        case .cancelled:
            self.init(.internalError, error.callerMessage)
        case .modelNotFound:
            self.init(.modelNotFound, error.callerMessage)
            if let model = error.model {
                details["model"] = .string(model.name)
                details["folder"] = .string(model.folder)
                details["available"] = .array(error.availableModels.map(JSONValue.string))
            }
        }
        if let node = error.nodeID, details["node_id"] == nil { details["node_id"] = .string(node) }
    }
}

extension APIError {
    /// The API's view of a workflow the node policy refused: the node, its class and the input.
    init(_ rejection: WorkflowRejection) {
        self.init(.workflowRefused, rejection.message, details: [
            "node_id": .string(rejection.nodeID),
            "class_type": .string(rejection.classType),
        ])
        if let input = rejection.input { details["input"] = .string(input) }
    }
}
