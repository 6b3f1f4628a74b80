import Comfy
import Testing

struct ComfyServerURLTests {
    @Test func parsesHostPortAndPrefix() throws {
        let url = try #require(ComfyServerURL("http://gpu1:8188/comfy/"))
        #expect(url.host == "gpu1")
        #expect(url.port == 8188)
        #expect(url.basePath == "/comfy")
        #expect(url.http("/prompt") == "http://gpu1:8188/comfy/prompt")
        #expect(ComfyServerURL("http://[::1]:8188")?.host == "::1")
    }

    @Test(arguments: ["https://gpu1:8188", "gpu1:8188", "http://", "http://host:99999", "http://user@host:1", "ftp://x"])
    func refusesWhatItCannotReach(_ text: String) {
        #expect(ComfyServerURL(text) == nil)
    }
}
