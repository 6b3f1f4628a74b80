@testable import Comfy
import Testing

/// The names the API answers under: addresses and `localhost` always, other names only when
/// configured (DNS rebinding).
struct HostPolicyTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var host: String?
        var allowed: Bool
        var testDescription: String { host ?? "-" }
    }

    static let unconfigured: [Case] = [
        Case(host: "127.0.0.1:8000", allowed: true),
        Case(host: "10.0.0.5", allowed: true),
        Case(host: "localhost:8000", allowed: true),
        Case(host: "LOCALHOST", allowed: true),
        Case(host: "[::1]:8000", allowed: true),
        Case(host: "[fe80::1]", allowed: true),
        Case(host: nil, allowed: true),
        Case(host: "evil.example:8000", allowed: false),
        Case(host: "evil.example", allowed: false),
        Case(host: "gateway:8000", allowed: false),
        Case(host: "127.0.0.1.evil.example", allowed: false),
        Case(host: "localhost.evil.example", allowed: false),
        Case(host: "", allowed: false),
        Case(host: "[::1", allowed: false),
    ]

    @Test(arguments: unconfigured)
    func withoutConfigurationOnlyAddressesAndLocalhost(_ testCase: Case) throws {
        #expect(try HostPolicy().allows(host: testCase.host) == testCase.allowed)
    }

    static let configured: [Case] = [
        Case(host: "img.example.com", allowed: true),
        Case(host: "IMG.Example.COM.:443", allowed: true),
        Case(host: "paint.example.com", allowed: false),
        Case(host: "gateway:8000", allowed: true),
        Case(host: "corp.example", allowed: true),
        Case(host: "gpu-1.corp.example", allowed: true),
        Case(host: "127.0.0.1:8000", allowed: true),
        Case(host: "other.example.com", allowed: false),
        Case(host: "notcorp.example", allowed: false),
        Case(host: "gateway.evil.example", allowed: false),
        Case(host: "example.com", allowed: false),
    ]

    /// An allowed origin is another site calling the gateway: its name is not the gateway's.
    @Test(arguments: configured)
    func configuredNamesDomainsAndThePublicURLsHost(_ testCase: Case) throws {
        let origins = try OriginPolicy(publicBaseURL: "https://img.example.com/gateway", allowed: ["https://paint.example.com"])
        let policy = try HostPolicy(allowed: ["gateway", ".corp.example"], api: origins)
        #expect(policy.allows(host: testCase.host) == testCase.allowed)
    }

    @Test func aStarOrAnyPageReadingTheAPIAllowsEveryName() throws {
        #expect(try HostPolicy(allowed: ["*"]).allows(host: "evil.example"))
        #expect(try HostPolicy(api: OriginPolicy(allowed: ["*"])).allows(host: "evil.example"))
    }

    @Test(arguments: ["a b", "evil.example/x", "user@host", "ex ample", "näme"])
    func entriesThatAreNoNamesAreRefused(_ entry: String) {
        #expect(throws: HostPolicy.InvalidHost.self) { try HostPolicy(allowed: [entry]) }
    }
}
