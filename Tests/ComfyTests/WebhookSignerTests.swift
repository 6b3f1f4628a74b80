@testable import Comfy
import Foundation
import Testing

struct WebhookSignerTests {
    /// The example of the Standard Webhooks spec (and Svix's libraries' tests).
    @Test func signsTheStandardWebhooksExampleExactly() throws {
        let signer = try #require(WebhookSigner(secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let headers = signer.headers(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1614265330, body: Array(#"{"test": 2432232314}"#.utf8))
        #expect(headers.first { $0.0 == "webhook-signature" }?.1 == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        #expect(headers.first { $0.0 == "webhook-id" }?.1 == "msg_p5jXN8AQM9LWM0D4loKWxJek")
        #expect(headers.first { $0.0 == "webhook-timestamp" }?.1 == "1614265330")
    }

    /// The value is Python's `hmac` over the same labels: a key's secret is derived from the
    /// gateway's secret, a root the gateway keeps to itself, and the key's name.
    @Test func eachKeyHasItsOwnSecretThatTheGatewaysSecretAloneDoesNotGive() throws {
        let gateway = try #require(WebhookSigner(secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let keyring = WebhookKeyring(gateway: gateway, root: [UInt8](repeating: 7, count: 32))
        let studio = keyring.signer(forKey: "studio-a")
        #expect(studio.secret == "whsec_3aeKo6yqttsZH5b193SVKe6Cz0p8YCBpJ7u/F10Qr8w=")
        #expect(keyring.signer(forKey: "studio-b").secret != studio.secret)
        #expect(WebhookKeyring(gateway: gateway, root: [UInt8](repeating: 8, count: 32)).signer(forKey: "studio-a").secret != studio.secret)
        #expect(gateway.secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        // What a receiver builds from the secret it was given signs as the gateway does.
        let body = Array(#"{"id":"x"}"#.utf8)
        let received = try #require(WebhookSigner(secret: studio.secret))
        #expect(received.signature(id: "j1", timestamp: 1, body: body) == studio.signature(id: "j1", timestamp: 1, body: body))
        #expect(gateway.signature(id: "j1", timestamp: 1, body: body) != studio.signature(id: "j1", timestamp: 1, body: body))
    }

    @Test func refusesSecretsThatAreNotBase64OrTooShort() {
        #expect(WebhookSigner(secret: "whsec_not base64!") == nil)
        #expect(WebhookSigner(secret: "whsec_" + Data("short".utf8).base64EncodedString()) == nil)
    }
}

struct OutboundURLTests {
    @Test(arguments: [
        ("8.8.8.8", true), ("1.1.1.1", true), ("127.0.0.1", false), ("10.1.2.3", false), ("172.16.0.1", false), ("172.32.0.1", true),
        ("192.168.1.1", false), ("169.254.169.254", false), ("100.64.0.1", false), ("0.0.0.0", false), ("224.0.0.1", false),
        ("::1", false), ("::", false), ("fe80::1", false), ("fd00::1", false), ("::ffff:127.0.0.1", false), ("::ffff:8.8.8.8", true),
        ("2606:4700:4700::1111", true),
        // Forms that embed or stand for an IPv4 address, and special-purpose blocks (an attacker's review).
        ("::7f00:1", false), ("::8.8.8.8", false), ("::ffff:0:127.0.0.1", false), ("::ffff:0:8.8.8.8", false),
        ("2002:7f00:1::", false), ("2002:a9fe:a9fe::1", false), ("2002:808:808::1", true),
        ("2001::1", false), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", false), ("2001:2::1", false), ("2001:4860:4860::8888", true),
        ("64:ff9b::127.0.0.1", false), ("64:ff9b::8.8.8.8", true), ("64:ff9b:1::8.8.8.8", false), ("100::1", false),
        ("fec0::1", false), ("192.88.99.1", false), ("168.63.129.16", false), ("168.63.129.17", true),
    ])
    func addressesArePublicOnlyWhenGloballyRoutable(_ address: String, _ isPublic: Bool) throws {
        let resolved = try #require(resolveAddresses(address, port: 80).first)
        #expect(resolved.isPublic == isPublic, "\(address)")
    }

    @Test(arguments: [
        "ftp://example.com/hook", "file:///etc/passwd", "http://user:pass@example.com/", "http:///nohost", "gopher://x",
        "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
        "http://0x7f000001/", "http://2130706433/",
    ])
    func forbiddenURLsAreRefused(_ url: String) async {
        await #expect(throws: OutboundURL.Refusal.self) { try await OutboundURL.check(url, allowPrivate: false) }
    }

    @Test(arguments: [
        "http://127.0.0.1:9999/view?filename=a.png&type=output", "http://127.0.0.2:9999/interrupt", "http://localhost:9999/x", "http://0.0.0.0:9999/x",
        "http://[::ffff:127.0.0.1]:9999/x", "http://[::1]:9999/x", "http://127.0.0.1:8000/api/jobs",
        "http://[64:ff9b::7f00:1]:9999/x", "http://[2002:7f00:1::1]:9999/x",
    ])
    func theGatewaysOwnComfyUIAndPortAreNeverCalledEvenWhenPrivateAddressesAre(_ url: String) async {
        let protected = ProtectedEndpoints(backends: [ComfyServerURL("http://127.0.0.1:9999")!], ownPort: 8000)
        await #expect(throws: OutboundURL.Refusal.self) { try await OutboundURL.check(url, allowPrivate: true, protected: protected) }
    }

    @Test func anotherPortOnTheSameAddressIsCalledAndAnAddressLiteralNeedsNoPin() async throws {
        let protected = ProtectedEndpoints(backends: [ComfyServerURL("http://127.0.0.1:9999")!], ownPort: 8000)
        let other = try await OutboundURL.check("http://127.0.0.1:9998/hook", allowPrivate: true, protected: protected)
        #expect(other.resolve.isEmpty, "curl looks no address literal up")
        // An IPv6 literal's pin would be malformed (curl reads a pin's host up to its first colon).
        let v6 = try await OutboundURL.check("http://[2606:4700:4700::1111]/hook", allowPrivate: false, protected: protected)
        #expect(v6.resolve.isEmpty)
        var request = CurlRequest(url: v6.url)
        v6.pin(&request)
        #expect(request.direct, "no proxy from the environment, pinned or not")
    }

    @Test func privateTargetsAreAllowedWhenConfiguredAndThePinnedAddressIsTheResolvedOne() async throws {
        let target = try await OutboundURL.check("http://localhost:9999/hook", allowPrivate: true)
        #expect(target.resolve == ["+localhost:9999:127.0.0.1"] || target.resolve == ["+localhost:9999:[::1]"], "\(target.resolve)")
        let long = "https://example.com/" + String(repeating: "a", count: OutboundURL.maxLength)
        await #expect(throws: OutboundURL.Refusal.self) { try await OutboundURL.check(long, allowPrivate: true) }
    }
}
