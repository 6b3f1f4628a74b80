import Foundation

/// Fetching an input image by URL: every hop checked against SSRF and pinned to the address
/// checked, at most `maxRedirects` redirects, bounded in bytes and in time.
extension InputImages {
    func fetch(_ url: String, field: String, owner: String, by deadline: ContinuousClock.Instant) async throws -> [UInt8] {
        var current = url
        for _ in 0...limits.maxRedirects {
            let target: OutboundURL
            do {
                target = try await OutboundURL.check(
                    current, allowPrivate: limits.allowPrivate, protected: limits.protected, owner: owner, field: field, allowVariable: "INPUT_URL_ALLOW_PRIVATE"
                )
            } catch let refusal as OutboundURL.Refusal {
                throw InputImageError(refusal.busy ? .busy : .refused, field: field, refusal.description)
            }
            let remaining = deadline - .now
            guard remaining > .zero else { break }
            var request = CurlRequest(url: target.url, headers: [("Accept", "image/png, image/jpeg, image/webp")], timeout: remaining)
            // The wait for a place and a thread counts too (`fetchShares`).
            request.deadline = deadline
            target.pin(&request)
            request.maxResponseBytes = limits.maxBytes
            // A server trickling its answer gives up its thread before the fetch's time is out.
            // Half of it: curl counts the wait for the first byte too (a cold start, a render).
            request.minimumSpeed = (bytesPerSecond: 1024, over: max(.seconds(5), limits.fetchTimeout / 2))
            let share = AddressShare.name(of: owner)
            guard await fetchShares.acquire(share, by: deadline) else {
                throw InputImageError(.busy, field: field, "\(field)'s URL was not fetched in time: the gateway is fetching many images; try again shortly")
            }
            let response: CurlResponse
            do {
                // Given back when the thread is, not when this stops waiting for it.
                response = try await http.execute(request, whenThreadFree: { [fetchShares] in fetchShares.done(share) })
            } catch let error as CurlError {
                switch error.kind {
                case .responseTooLarge: throw InputImageError(.tooLarge, field: field, "\(field)'s URL gave more than \(limits.maxBytes) bytes")
                case .timedOut:
                    throw InputImageError(.unreachable, field: field, "\(field)'s URL did not send its image in time (within \(limits.fetchTimeout), at 1 KiB/s or more)")
                default:
                    // One text for every failure short of an HTTP answer: curl's reason (refused,
                    // reset, not HTTP, TLS) would tell a caller what listens on a port that only
                    // the gateway can reach.
                    throw InputImageError(.unreachable, field: field, "\(field)'s URL could not be fetched: no HTTP answer came from its server")
                }
            }
            switch response.status {
            case 200:
                return response.body
            case 301, 302, 303, 307, 308:
                guard let location = response.header("location"), let next = URL(string: location, relativeTo: URL(string: current))?.absoluteString else {
                    throw InputImageError(.unreachable, field: field, "\(field)'s URL redirected without a usable Location")
                }
                current = next
            default:
                throw InputImageError(.unreachable, field: field, "\(field)'s URL answered HTTP \(response.status)")
            }
        }
        if deadline <= .now { throw InputImageError(.unreachable, field: field, "\(field)'s URL did not answer within \(limits.fetchTimeout)") }
        throw InputImageError(.unreachable, field: field, "\(field)'s URL redirected more than \(limits.maxRedirects) times")
    }
}
