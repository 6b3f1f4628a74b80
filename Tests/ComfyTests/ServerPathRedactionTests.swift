@testable import Comfy
import Testing

/// ComfyUI's messages reach callers without the GPU server's folders or source locations.
struct ServerPathRedactionTests {
    @Test(arguments: [
        ("cannot identify image file '/home/ai/ComfyUI/input/cat.png'", "cannot identify image file 'cat.png'"),
        ("Invalid image file: /srv/comfy/input/gateway/x.png", "Invalid image file: x.png"),
        ("[Errno 2] No such file or directory: \"/opt/comfy/models/a.ckpt\"", "[Errno 2] No such file or directory: \"a.ckpt\""),
        ("File C:\\ComfyUI\\input\\cat.png missing", "File cat.png missing"),
        ("see https://example.com/docs/page", "see https://example.com/docs/page"),
        ("gateway/x.png is fine", "gateway/x.png is fine"),
        ("ratio 1/2 and /tmp", "ratio 1/2 and /tmp"),
        ("cannot identify image file 'C:\\\\ComfyUI\\\\input\\\\x.png'", "cannot identify image file 'x.png'"),
        ("open \\\\fileserver\\share\\comfy\\x.png failed", "open x.png failed"),
        ("cannot identify image file '/home/John Smith/ComfyUI/input/x.png'", "cannot identify image file 'x.png'"),
        ("at file:///srv/comfy/x.png and path:/srv/comfy/y.png", "at file:x.png and path:y.png"),
        ("see http://example.com/a/b", "see http://example.com/a/b"),
    ])
    func strings(_ pair: (String, String)) {
        #expect(ServerPathRedaction.redact(pair.0) == pair.1)
    }

    @Test func tracebacksAreDroppedAndNestedStringsRedacted() throws {
        let comfy = try JSONValue.parse(Array(#"""
        {"9": {"errors": [{"type": "exception_during_validation", "details": "'/srv/comfy/execution.py' broke",
          "extra_info": {"traceback": ["  File \"/srv/comfy/execution.py\", line 1\n"], "exception_type": "KeyError"}}],
          "class_type": "SaveImageWebsocket"}}
        """#.utf8))
        let redacted = ServerPathRedaction.redact(comfy)
        let text = String(decoding: redacted.encoded(), as: UTF8.self)
        #expect(!text.contains("/srv"))
        #expect(!text.contains("traceback"))
        #expect(redacted["9"]?["errors"]?.arrayValue?.first?["details"] == "'execution.py' broke")
        #expect(redacted["9"]?["errors"]?.arrayValue?.first?["extra_info"]?["exception_type"] == "KeyError")
    }
}
