import Foundation

/// An API key as the store keeps it: its name, limits and state; the secret itself is kept
/// only as its SHA-256 (the secret has 256 random bits, so a fast hash is enough).
public struct APIKey: Sendable, Equatable {
    public var name: String
    /// Prompts of this key on the GPUs at once; `nil` for no limit.
    public var maxRunning: Int?
    /// Jobs of this key waiting or running at once; beyond: 429.
    public var maxQueued: Int?
    /// Submissions a minute (a token bucket of that size, refilled evenly).
    public var ratePerMinute: Int?
    public var createdAt: Date
    public var revokedAt: Date?

    public init(name: String, maxRunning: Int? = nil, maxQueued: Int? = nil, ratePerMinute: Int? = nil, createdAt: Date = Date(), revokedAt: Date? = nil) {
        self.name = name
        self.maxRunning = maxRunning
        self.maxQueued = maxQueued
        self.ratePerMinute = ratePerMinute
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }

    /// A name for keys: 1 to 64 letters, digits, `-`, `_` or `.` (it appears in metrics).
    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2D || byte == 0x5F || byte == 0x2E
        }
    }

    /// A new secret: `cgw_` and 256 random bits in base64url.
    public static func newSecret() -> String {
        "cgw_" + RandomSecret.bytes(32).base64URL
    }

    /// What the store keeps of a secret.
    public static func hash(of secret: String) -> String {
        Digest.hex(Digest.sha256(Array(secret.utf8)))
    }
}

/// What one key has used: its jobs by status, GPU time and image bytes.
public struct KeyUsage: Sendable, Equatable {
    public var jobs: [JobStatus: Int]
    public var gpuSeconds: Double
    public var imageBytes: Int

    public init(jobs: [JobStatus: Int] = [:], gpuSeconds: Double = 0, imageBytes: Int = 0) {
        self.jobs = jobs
        self.gpuSeconds = gpuSeconds
        self.imageBytes = imageBytes
    }
}
