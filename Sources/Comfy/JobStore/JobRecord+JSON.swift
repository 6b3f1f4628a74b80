import Foundation

extension JobRecord {
    /// The job object of the API (`GET /api/jobs/{id}`, webhook bodies, SSE's last event).
    public func json(queuePosition: Int? = nil) -> JSONValue {
        func time(_ date: Date?) -> JSONValue { date.map { .string(Self.timestamp($0)) } ?? .null }
        var object: [String: JSONValue] = [
            "id": .string(id),
            "status": .string(status.rawValue),
            "progress": .number((progress * 1000).rounded() / 1000),
            "queue_position": status == .queued ? queuePosition.map { .number(Double($0)) } ?? .null : .null,
            "created_at": time(createdAt),
            "started_at": time(startedAt),
            "finished_at": time(finishedAt),
            "error": failure?.error ?? .null,
        ]
        object["result"] = result?.json ?? .null
        object["webhook"] = webhookURL == nil ? .null : .object([
            "attempts": .number(Double(webhook.attempts)),
            "last_status": webhook.lastStatus.map { .number(Double($0)) } ?? .null,
            "delivered_at": time(webhook.deliveredAt),
        ])
        return .object(object)
    }

    /// ISO 8601 in UTC with milliseconds: `2026-12-02T01:23:45.678Z`.
    static func timestamp(_ date: Date) -> String {
        let milliseconds = date.milliseconds
        let seconds = UTCTimestamp(epochSeconds: Int64(milliseconds.floorDiv(1000))).iso8601
        let fraction = milliseconds - milliseconds.floorDiv(1000) * 1000
        return "\(seconds.dropLast()).\(String(fraction + 1000).dropFirst())Z"
    }
}

extension Int {
    fileprivate func floorDiv(_ divisor: Int) -> Int {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}

extension JobResult {
    /// `{"url", "filename", "content_type", "expires_at", "urls", "images"}`: the first image's
    /// fields (what one-image callers read), then every image of the batch.
    public var json: JSONValue {
        func fields(_ image: JobResult) -> [String: JSONValue] {
            var answer: [String: JSONValue] = [
                "url": .string(image.url), "filename": .string(image.filename), "content_type": .string(image.contentType),
            ]
            answer["expires_at"] = image.expiresAt.map { .string(UTCTimestamp($0).iso8601) }  // whole seconds, as signed URLs have
            return answer
        }
        var answer = fields(self)
        answer["urls"] = .array(all.map { .string($0.url) })
        answer["images"] = .array(all.map { .object(fields($0)) })
        return .object(answer)
    }
}
