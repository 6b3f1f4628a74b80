@testable import Comfy
import Testing

/// How an object store's endpoint setting becomes the `Host` that is signed and sent.
struct ObjectEndpointTests {
    @Test(arguments: [
        ("https://minio.example.com:443", "minio.example.com"),
        ("http://minio.example.com:80/base/", "minio.example.com"),
        ("http://[::1]:80", "[::1]"),
        ("https://minio.example.com:80", "minio.example.com:80"),
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ("oss-cn-hangzhou.aliyuncs.com", "oss-cn-hangzhou.aliyuncs.com"),
    ])
    func theSchemesOwnPortIsLeftOutOfTheSignedHost(_ setting: String, _ host: String) throws {
        let endpoint = try #require(ObjectEndpoint(setting))
        #expect(endpoint.hostHeader == host)
    }
}
