@testable import Comfy
import Foundation
import Testing

/// OSS V1 signatures: the examples of Aliyun's OSS API reference, each also recomputed by an
/// independent implementation (Python's hmac, hashlib and base64 in a child process).
struct OSSSignerTests {
    // Aliyun's example credentials ("在Header中包含签名" / "在URL中包含签名").
    static let signer = OSSSigner(accessKeyID: "44CF9590006BF252F707", accessKeySecret: "OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV")
    static let secret = "OtxrzxIsfpFjA7SwPzILwy8Bw21TLhquhboDYROV"

    @Test func headerSignatureMatchesAliyunExample() throws {
        // PUT /nelson HTTP/1.0 on oss-example.oss-cn-hangzhou.aliyuncs.com.
        let headers = [("X-OSS-Meta-Author", "foo@bar.com"), ("X-OSS-Magic", "abracadabra"), ("Host", "oss-example.oss-cn-hangzhou.aliyuncs.com")]
        let text = OSSSigner.stringToSign(
            verb: "PUT", contentMD5: "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=", contentType: "text/html",
            date: "Thu, 17 Nov 2005 18:49:58 GMT", headers: headers, resource: "/oss-example/nelson"
        )
        #expect(text == "PUT\nODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=\ntext/html\nThu, 17 Nov 2005 18:49:58 GMT\nx-oss-magic:abracadabra\nx-oss-meta-author:foo@bar.com\n/oss-example/nelson")
        let authorization = Self.signer.authorization(
            verb: "PUT", contentMD5: "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=", contentType: "text/html",
            date: "Thu, 17 Nov 2005 18:49:58 GMT", headers: headers, resource: "/oss-example/nelson"
        )
        #expect(authorization == "OSS 44CF9590006BF252F707:26NBxoKdsyly4EDv6inkoDft/yA=")
        #expect(try IndependentHMAC.sha1Base64(key: Self.secret, message: text) == "26NBxoKdsyly4EDv6inkoDft/yA=")
    }

    @Test func signedURLMatchesAliyunExample() throws {
        // Aliyun's URL example: GET oss-api.pdf in oss-example, Expires=1141889120.
        let url = Self.signer.signedURL(scheme: "http", host: "oss-example.oss-cn-hangzhou.aliyuncs.com", bucket: "oss-example", key: "oss-api.pdf", expires: 1_141_889_120)
        #expect(url == "http://oss-example.oss-cn-hangzhou.aliyuncs.com/oss-api.pdf?OSSAccessKeyId=44CF9590006BF252F707&Expires=1141889120&Signature=EwaNTn1erJGkimiJ9WmXgwnANLc%3D")
        #expect(try IndependentHMAC.sha1Base64(key: Self.secret, message: "GET\n\n\n1141889120\n/oss-example/oss-api.pdf") == "EwaNTn1erJGkimiJ9WmXgwnANLc=")
        // The printed signature of that page, vjbyPxybdZaNmGa%2ByT272YEAiv4%3D, was carried over from
        // the S3 reference it was modelled on, whose resource is /quotes/nelson: reproduce it too.
        let nelson = OSSSigner.stringToSign(verb: "GET", date: "1141889120", resource: "/quotes/nelson")
        #expect(URIEncoding.encode(Self.signer.signature(nelson)) == "vjbyPxybdZaNmGa%2ByT272YEAiv4%3D")
        #expect(try IndependentHMAC.sha1Base64(key: Self.secret, message: nelson) == "vjbyPxybdZaNmGa+yT272YEAiv4=")
    }

    @Test func signaturesAgreeWithIndependentImplementation() throws {
        let signer = OSSSigner(accessKeyID: "LTAI-test", accessKeySecret: "s3cr3t/+=key-ü")
        var texts: [String] = []
        for (index, key) in ["comfy_images/abc.png", "a b/ü~.webp", String(repeating: "x", count: 300)].enumerated() {
            texts.append(OSSSigner.stringToSign(verb: "PUT", contentType: "image/png", date: "Mon, 0\(index) Jan 2024 00:00:00 GMT", headers: [("x-oss-meta-n", "\(index)")], resource: "/bucket/\(key)"))
            texts.append(OSSSigner.stringToSign(verb: "GET", date: "\(1_700_000_000 + index)", resource: "/bucket/\(key)"))
        }
        for text in texts {
            #expect(try signer.signature(text) == IndependentHMAC.sha1Base64(key: "s3cr3t/+=key-ü", message: text))
        }
        #expect(!signer.description.contains("s3cr3t"))
    }
}
