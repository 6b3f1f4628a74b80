import Comfy
import Foundation
import NIOConcurrencyHelpers

/// Who may call the keyed endpoints: once a key exists (or `AUTH=required`), a request needs
/// `Authorization: Bearer <key>`. Verified keys are cached for a second, so a check costs a
/// hash and a dictionary lookup, and a revocation takes effect within that second.
final class APIKeyGate: Sendable {
    enum Mode: String, Sendable {
        /// Keys are needed once one has been made (revoking every key does not open the door).
        case auto
        /// Keys are always needed.
        case required
        /// No keys, whatever the store holds.
        case off
    }

    private struct Cached {
        var key: APIKey?
        var checkedAt: ContinuousClock.Instant
    }

    private struct State {
        /// Secrets' hashes that named a key, and those that named none: kept apart, so unknown
        /// secrets sent by the thousand (which clear theirs past `maxUnknown`) never push the
        /// real keys out.
        var keys: [String: Cached] = [:]
        var unknown: [String: ContinuousClock.Instant] = [:]
        var activeKeys: (count: Int, checkedAt: ContinuousClock.Instant)?
        var activeByName: (keys: [String: APIKey], checkedAt: ContinuousClock.Instant)?
        var buckets: [String: TokenBucket] = [:]
    }

    private let store: any JobStore
    private let mode: Mode
    private let maxAge: Duration
    private let state = NIOLockedValueBox(State())

    /// Unknown secrets remembered at most.
    static let maxUnknown = 10_000

    init(store: any JobStore, mode: Mode, maxAge: Duration = .seconds(1)) {
        self.store = store
        self.mode = mode
        self.maxAge = maxAge
    }

    /// The request's key; `nil` when keys are not needed. Throws 401 without a valid key.
    func authenticate(authorization: String?) async throws -> APIKey? {
        guard try await keysNeeded() else { return nil }
        guard let header = authorization, header.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw Self.unauthorized("this endpoint needs an API key: send Authorization: Bearer <key>")
        }
        let secret = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        let hash = APIKey.hash(of: secret)
        let now = ContinuousClock.now
        let cached: Cached? = state.withLockedValue { state in
            if let known = state.keys[hash], now - known.checkedAt < maxAge { return known }
            if let checkedAt = state.unknown[hash], now - checkedAt < maxAge { return Cached(key: nil, checkedAt: checkedAt) }
            return nil
        }
        let key: APIKey?
        if let cached {
            key = cached.key
        } else {
            key = try await store.activeKey(hash: hash)
            state.withLockedValue { state in
                if let key {
                    // At most one entry per key ever made: a revoked one stays until read again.
                    state.keys[hash] = Cached(key: key, checkedAt: now)
                } else {
                    state.keys[hash] = nil
                    if state.unknown.count >= Self.maxUnknown { state.unknown.removeAll() }
                    state.unknown[hash] = now
                }
            }
        }
        guard let key else { throw Self.unauthorized("the API key is unknown or revoked") }
        return key
    }

    /// Whether the key of this name exists and is not revoked: what a session token given to it
    /// is worth.
    func isActive(name: String) async -> Bool {
        await activeKey(named: name) != nil
    }

    /// The key of this name unless it is revoked, read again after a second as a secret's check
    /// is. While the store cannot be read, the last list read stands: a database hiccup is not
    /// a revocation of every key.
    func activeKey(named name: String) async -> APIKey? {
        let now = ContinuousClock.now
        let cached = state.withLockedValue { $0.activeByName }
        if let cached, now - cached.checkedAt < maxAge { return cached.keys[name] }
        guard let keys = try? await store.keys() else { return cached?.keys[name] }
        let active = Dictionary(keys.filter { $0.revokedAt == nil }.map { ($0.name, $0) }) { first, _ in first }
        state.withLockedValue { $0.activeByName = (active, now) }
        return active[name]
    }

    /// Whether the key of this name was revoked (or is unknown) as of the last read of the keys;
    /// `false` before any. For checks that cannot wait for the store (event loops).
    func wasRevoked(name: String) -> Bool {
        state.withLockedValue { $0.activeByName.map { $0.keys[name] == nil } ?? false }
    }

    /// Reads the keys again unless they were read within the last second.
    func readKeys() async {
        _ = await activeKey(named: "")
    }

    /// Takes one submission from the key's rate; throws 429 with the wait when it is spent.
    /// Several instances on one store spend from one bucket, kept there.
    func spend(_ key: APIKey) async throws {
        guard let rate = key.ratePerMinute else { return }
        let wait: Duration?
        if let shared = store as? any SharedJobStore {
            wait = try await shared.spend(rateOf: key.name, perMinute: rate)
        } else {
            let now = ContinuousClock.now
            wait = state.withLockedValue { state in
                var bucket = state.buckets[key.name] ?? TokenBucket(capacity: rate, perMinute: rate, now: now)
                let wait = bucket.take(now: now)
                state.buckets[key.name] = bucket
                return wait
            }
        }
        guard let wait else { return }
        let seconds = max(1, Int(wait.seconds.rounded(.up)))
        var error = APIError(.rateLimited, "key \(key.name) may submit \(rate) jobs a minute; try again in \(seconds) s")
        error.headers = [("Retry-After", "\(seconds)")]
        throw error
    }

    private func keysNeeded() async throws -> Bool {
        switch mode {
        case .off: return false
        case .required: return true
        case .auto:
            let now = ContinuousClock.now
            if let known = state.withLockedValue({ $0.activeKeys }), now - known.checkedAt < maxAge { return known.count > 0 }
            let count = try await store.keyCount()
            state.withLockedValue { $0.activeKeys = (count, now) }
            return count > 0
        }
    }

    static func unauthorized(_ message: String) -> APIError {
        var error = APIError(.unauthorized, message)
        error.headers = [("WWW-Authenticate", #"Bearer realm="comfy-gateway""#)]
        return error
    }
}

/// A bucket of `capacity` tokens refilled at `perMinute`: bursts up to the capacity, then an even rate.
struct TokenBucket: Sendable {
    let capacity: Double
    let perSecond: Double
    var tokens: Double
    var updated: ContinuousClock.Instant

    init(capacity: Int, perMinute: Int, now: ContinuousClock.Instant) {
        self.capacity = Double(capacity)
        perSecond = Double(perMinute) / 60
        tokens = Double(capacity)
        updated = now
    }

    /// Takes a token; returns how long until one is there when none is.
    mutating func take(now: ContinuousClock.Instant) -> Duration? {
        tokens = min(capacity, tokens + (now - updated).seconds * perSecond)
        updated = now
        guard tokens >= 1 else { return .seconds((1 - tokens) / perSecond) }
        tokens -= 1
        return nil
    }
}
