import NIOConcurrencyHelpers

/// The last answer of a route and what it was made of: while that compares equal, the answer
/// is sent again instead of being built and encoded anew (for `/healthz` that was most of the
/// request's time in the app, perf).
final class ResponseMemo<Inputs: Equatable & Sendable>: Sendable {
    private let last = NIOLockedValueBox<(inputs: Inputs, response: GatewayResponse)?>(nil)

    func response(for inputs: Inputs, _ make: (Inputs) -> GatewayResponse) -> GatewayResponse {
        if let cached = last.withLockedValue({ $0 }), cached.inputs == inputs { return cached.response }
        let response = make(inputs)
        last.withLockedValue { $0 = (inputs, response) }
        return response
    }
}
