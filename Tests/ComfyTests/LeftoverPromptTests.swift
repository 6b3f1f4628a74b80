@testable import Comfy
import Testing

/// Which prompts in ComfyUI's queue load this gateway's sketch files.
struct LeftoverPromptTests {
    @Test func aSketchFileOfThisPrefixIsKnownByItsExactShape() {
        let cases: [(String, Bool)] = [
            ("gateway/sketch-a1b2-0.png", true),
            ("gateway/sketch-a1b2-417.jpg", true),
            ("gateway/sketch-a1b2-3.webp", true),
            ("gateway/sketch-other-3.png", false),
            ("gateway/sketch-a1b2-.png", false),
            ("gateway/sketch-a1b2-x.png", false),
            ("gateway/sketch-a1b2-1.png.txt", false),
            ("sketch-a1b2-1.png", false),
            ("elsewhere/sketch-a1b2-1.png", false),
            ("gateway/input-0123.png", false),
        ]
        for (name, expected) in cases {
            #expect(SketchSlots.isSketchFile(name, prefix: "a1b2", subfolder: "gateway") == expected, "\(name)")
        }
        #expect(SketchSlots.isSketchFile("sketch-a1b2-1.png", prefix: "a1b2", subfolder: ""))
    }

    @Test func queueEntriesAreReadWithTheirWorkflowsRunningFirst() throws {
        let queue = try JSONValue.parse(Array("""
            {"queue_running": [[3, "run", {"1": {"class_type": "LoadImage", "inputs": {"image": "gateway/sketch-p-0.png"}}}, {"client_id": "c"}, ["9"]]],
             "queue_pending": [[4, "wait", {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}, {"comfy_gateway_leftover": "p", "comfy_gateway_process": "earlier"}, ["9"]], ["broken"]]}
            """.utf8))
        let entries = ComfyQueueEntry.decode(queue)
        #expect(entries.map(\.promptID) == ["run", "wait"])
        #expect(entries.map(\.isRunning) == [true, false])
        #expect(entries.map(\.leftoverMark) == [nil, "p"], "the mark a prompt that ends with its process carries in extra_data")
        #expect(entries.map { $0.isLeftover(of: "p") } == [false, true])
        #expect(entries.map { $0.isLeftover(of: "q") } == [false, false], "another STATE_DIR's")
        let ours = ComfyQueueEntry(promptID: "x", prompt: .null, isRunning: false, leftoverMark: "p", process: ComfyQueueEntry.thisProcess)
        #expect(!ours.isLeftover(of: "p"), "this process's own, whichever backend URL it went through")
        let loadsSketch = { (entry: ComfyQueueEntry) in entry.hasInput { SketchSlots.isSketchFile($0, prefix: "p", subfolder: "gateway") } }
        #expect(entries.map(loadsSketch) == [true, false])
    }
}
