@testable import Comfy
import Testing

/// Origins compared by scheme, host and port; a page's own origin only on an IP or localhost.
struct OriginPolicyTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var origin: String
        var scheme: String
        var host: String?
        var allowed: Bool
        var testDescription: String { "\(origin) via \(scheme)://\(host ?? "-")" }
    }

    static let unconfigured: [Case] = [
        Case(origin: "http://127.0.0.1:8000", scheme: "http", host: "127.0.0.1:8000", allowed: true),
        Case(origin: "http://localhost:8000", scheme: "http", host: "localhost:8000", allowed: true),
        Case(origin: "http://[::1]:8000", scheme: "http", host: "[::1]:8000", allowed: true),
        Case(origin: "HTTP://127.0.0.1:8000", scheme: "http", host: "127.0.0.1:8000", allowed: true),
        Case(origin: "https://10.0.0.5", scheme: "https", host: "10.0.0.5:443", allowed: true),
        Case(origin: "http://127.0.0.1:9999", scheme: "http", host: "127.0.0.1:8000", allowed: false),
        Case(origin: "http://127.0.0.1:8000", scheme: "https", host: "127.0.0.1:8000", allowed: false),
        Case(origin: "https://127.0.0.1:8000", scheme: "http", host: "127.0.0.1:8000", allowed: false),
        Case(origin: "http://evil.example", scheme: "http", host: "evil.example", allowed: false),
        Case(origin: "http://evil.example:8000", scheme: "http", host: "evil.example:8000", allowed: false),
        Case(origin: "null", scheme: "http", host: "127.0.0.1:8000", allowed: false),
        Case(origin: "http://127.0.0.1:8000", scheme: "http", host: nil, allowed: false),
    ]

    @Test(arguments: unconfigured)
    func withoutConfiguration(_ testCase: Case) throws {
        let policy = try OriginPolicy()
        #expect(policy.allows(origin: testCase.origin, scheme: testCase.scheme, host: testCase.host) == testCase.allowed)
    }

    @Test func publicBaseURLAndListedOriginsMatchExactly() throws {
        let policy = try OriginPolicy(publicBaseURL: "https://img.example.com/gateway", allowed: ["https://paint.example.com", "http://studio.example:8080"])
        #expect(policy.allows(origin: "https://img.example.com", scheme: "https", host: "img.example.com"))
        #expect(policy.allows(origin: "https://img.example.com:443", scheme: "http", host: "internal"))
        #expect(!policy.allows(origin: "http://img.example.com", scheme: "https", host: "img.example.com"))
        #expect(!policy.allows(origin: "https://img.example.com:8443", scheme: "https", host: "img.example.com:8443"))
        #expect(policy.allows(origin: "https://paint.example.com", scheme: "http", host: "127.0.0.1:8000"))
        #expect(!policy.allows(origin: "http://paint.example.com", scheme: "http", host: "paint.example.com"))
        #expect(policy.allows(origin: "http://studio.example:8080", scheme: "http", host: "x"))
        #expect(!policy.allows(origin: "http://studio.example", scheme: "http", host: "studio.example"))
        #expect(policy.lists("https://paint.example.com"))
        #expect(!policy.lists("http://127.0.0.1:8000"))
    }

    @Test func starAllowsAnyAndMalformedEntriesAreRefused() throws {
        #expect(try OriginPolicy(allowed: ["*"]).allows(origin: "https://anything.example", scheme: "http", host: nil))
        #expect(throws: OriginPolicy.InvalidOrigin.self) { try OriginPolicy(allowed: ["paint.example.com"]) }
        #expect(throws: OriginPolicy.InvalidOrigin.self) { try OriginPolicy(allowed: ["https://paint.example.com/page"]) }
        #expect(throws: OriginPolicy.InvalidOrigin.self) { try OriginPolicy(allowed: ["ftp://paint.example.com"]) }
    }
}
