@testable import Comfy
import Foundation
import Testing

/// SigV4 against AWS's published vectors: the get-vanilla family of the aws-sig-v4-test-suite
/// and the presigned-URL example of S3's "Authenticating Requests: Using Query Parameters".
struct S3SignerTests {
    /// One case of the test suite: the request's query, and AWS's canonical request, string to sign and signature.
    struct SuiteCase: Sendable, CustomTestStringConvertible {
        var name: String
        var query: [(String, String)]
        var canonicalQuery: String
        var canonicalRequestHash: String
        var signature: String
        var testDescription: String { name }
    }

    // aws-sig-v4-test-suite, credentials AKIDEXAMPLE, 20150830T123600Z, us-east-1, service "service".
    static let suite: [SuiteCase] = [
        SuiteCase(name: "get-vanilla", query: [], canonicalQuery: "",
                  canonicalRequestHash: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
                  signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        SuiteCase(name: "get-vanilla-query", query: [], canonicalQuery: "",
                  canonicalRequestHash: "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
                  signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        SuiteCase(name: "get-vanilla-empty-query-key", query: [("Param1", "value1")], canonicalQuery: "Param1=value1",
                  canonicalRequestHash: "1e24db194ed7d0eec2de28d7369675a243488e08526e8c1c73571282f7c517ab",
                  signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
        SuiteCase(name: "get-vanilla-query-order-key", query: [("Param1", "value2"), ("Param1", "Value1")], canonicalQuery: "Param1=Value1&Param1=value2",
                  canonicalRequestHash: "704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89",
                  signature: "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"),
        SuiteCase(name: "get-vanilla-query-order-key-case", query: [("Param2", "value2"), ("Param1", "value1")], canonicalQuery: "Param1=value1&Param2=value2",
                  canonicalRequestHash: "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
                  signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        SuiteCase(name: "get-vanilla-query-order-value", query: [("Param1", "value2"), ("Param1", "value1")], canonicalQuery: "Param1=value1&Param1=value2",
                  canonicalRequestHash: "c968629d70850097a2d8781c9bf7edcb988b04cac14cca9be4acc3595f884606",
                  signature: "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"),
        SuiteCase(name: "get-vanilla-query-unreserved",
                  query: [("-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")],
                  canonicalQuery: "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                  canonicalRequestHash: "c30d4703d9f799439be92736156d47ccfb2d879ddf56f5befa6d1d6aab979177",
                  signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
        SuiteCase(name: "get-vanilla-utf8-query", query: [("\u{1234}", "bar")], canonicalQuery: "%E1%88%B4=bar",
                  canonicalRequestHash: "eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073",
                  signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
    ]

    static let suiteSigner = S3Signer(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "us-east-1", service: "service")
    /// 2015-08-30T12:36:00Z.
    static let suiteTime = UTCTimestamp(epochSeconds: 1_440_938_160)
    static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    @Test(arguments: suite)
    func getVanillaFamilyMatchesAWSTestSuite(_ vector: SuiteCase) {
        let request = S3Signer.Request(method: "GET", host: "example.amazonaws.com", path: "/", query: vector.query, payloadHash: Self.emptyPayloadHash)
        var dated = request
        dated.headers = [("X-Amz-Date", Self.suiteTime.compact)]
        let computation = Self.suiteSigner.compute(dated, at: Self.suiteTime)
        #expect(computation.canonicalRequest == """
            GET
            /
            \(vector.canonicalQuery)
            host:example.amazonaws.com
            x-amz-date:20150830T123600Z

            host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
        #expect(computation.stringToSign == """
            AWS4-HMAC-SHA256
            20150830T123600Z
            20150830/us-east-1/service/aws4_request
            \(vector.canonicalRequestHash)
            """)
        #expect(computation.signature == vector.signature)

        let headers = Self.suiteSigner.authorizationHeaders(for: request, at: Self.suiteTime)
        #expect(headers.first { $0.0 == "X-Amz-Date" }?.1 == "20150830T123600Z")
        #expect(headers.first { $0.0 == "Authorization" }?.1
            == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=\(vector.signature)")
    }

    @Test func presignedURLMatchesS3DocumentationExample() {
        let signer = S3Signer(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
        let time = UTCTimestamp(epochSeconds: 1_369_353_600)  // 2013-05-24T00:00:00Z
        let request = S3Signer.Request(method: "GET", host: "examplebucket.s3.amazonaws.com", path: "/test.txt", payloadHash: S3Signer.unsignedPayload)
        let computation = signer.compute(signer.presignedRequest(request, at: time, expiresIn: 86_400), at: time)
        #expect(computation.canonicalRequest == """
            GET
            /test.txt
            X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host
            host:examplebucket.s3.amazonaws.com

            host
            UNSIGNED-PAYLOAD
            """)
        #expect(computation.stringToSign == """
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04
            """)
        #expect(computation.signature == "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
        #expect(signer.presignedURL(for: request, scheme: "https", at: time, expiresIn: 86_400)
            == "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    }

    @Test func presignedExpiryIsClampedToSevenDays() {
        let signer = S3Signer(accessKeyID: "AKID", secretAccessKey: "secret", region: "auto")
        let request = S3Signer.Request(method: "GET", host: "127.0.0.1:9000", path: "/bucket/a b/ü.png", payloadHash: S3Signer.unsignedPayload)
        let url = signer.presignedURL(for: request, scheme: "http", at: UTCTimestamp(epochSeconds: 0), expiresIn: 30 * 86_400)
        #expect(url.hasPrefix("http://127.0.0.1:9000/bucket/a%20b/%C3%BC.png?"))
        #expect(url.contains("&X-Amz-Expires=604800&"))
        #expect(!signer.description.contains("secret"))
    }

    @Test func timestampsFormatInUTC() {
        let time = UTCTimestamp(epochSeconds: 1_440_938_160)
        #expect(time.compact == "20150830T123600Z")
        #expect(time.dateStamp == "20150830")
        #expect(time.iso8601 == "2015-08-30T12:36:00Z")
        #expect(time.httpDate == "Sun, 30 Aug 2015 12:36:00 GMT")
        #expect(UTCTimestamp(epochSeconds: 1_132_253_398).httpDate == "Thu, 17 Nov 2005 18:49:58 GMT")
    }
}
