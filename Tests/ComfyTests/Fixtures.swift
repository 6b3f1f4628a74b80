import Comfy
import Foundation

/// The transcripts recorded from a real ComfyUI 0.3.64 (under Fixtures/), bundled as fixtures.
struct Transcript {
    let scenario: String
    let json: JSONValue
    /// Text frames as decoded events and binary frames as raw bytes, in wire order.
    let frames: [Frame]

    enum Frame {
        case text(String)
        case binary([UInt8])
    }

    var promptID: String? {
        json["response"]?["body"]?["prompt_id"]?.stringValue
    }

    var workflow: [String: JSONValue] {
        json["request"]?["body"]?["prompt"]?.objectValue ?? [:]
    }

    static func load(_ scenario: String) throws -> Transcript {
        let directory = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/ws")
        let json = try JSONValue.parse(Array(try Data(contentsOf: directory.appendingPathComponent("\(scenario).json"))))
        var frames: [Frame] = []
        var binaryIndex = 0
        for frame in json["ws_frames"]?.arrayValue ?? [] {
            switch frame["kind"]?.stringValue {
            case "text":
                frames.append(.text(frame["raw"]?.stringValue ?? ""))
            case "binary":
                let file = directory.appendingPathComponent("\(scenario).bin\(binaryIndex)")
                binaryIndex += 1
                if let data = try? Data(contentsOf: file) { frames.append(.binary(Array(data))) }
            default:
                break
            }
        }
        return Transcript(scenario: scenario, json: json, frames: frames)
    }

    static func fixtureBytes(_ path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: Bundle.module.resourceURL!.appendingPathComponent("Fixtures/\(path)")))
    }
}
