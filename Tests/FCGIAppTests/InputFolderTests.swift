import Comfy
import Foundation
import Testing

/// `COMFYUI_INPUT_DIR`: sketches written straight into ComfyUI's input folder when it is shared.
struct InputFolderTests {
    func withSharedFolder(_ label: String, folder: (String) -> String, _ body: (Gateway, Emulator, String) async throws -> Void) async throws {
        let directory = try TestPaths.makeTemporaryDirectory(label)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        let path = folder(directory)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let gateway = try Gateway(directory: directory, backends: [emulator.url], http: testHTTP, environment: ["COMFYUI_INPUT_DIR": path])
        defer { gateway.stop() }
        try await gateway.waitUntilHealthy()
        try Sketches.install(Sketches.style(), as: "realistic", in: gateway)
        try await body(gateway, emulator, path)
    }

    func resultSHA(_ gateway: Gateway, _ session: String) async throws -> JSONValue? {
        let response = try await gateway.get("/api/result/\(session)")
        return response.status == 200 ? emulatorMetadata(ofPNG: response.body)?["image_sha256"] : nil
    }

    func sketchAndWait(_ gateway: Gateway, _ session: String, seeds: [Int]) async throws {
        let painter = try await DrawingClient.connect(port: gateway.port, sessionID: session)
        for seed in seeds {
            let count = await painter.messages.count
            await painter.sendSketch(Sketches.png(seed: seed))
            let end = try await painter.next(status: "completed", "error", after: count)
            #expect(end["status"] == "completed", "\(end)")
            // ComfyUI's LoadImage read this sketch, not the one before.
            #expect(try await resultSHA(gateway, session) == .string(Digest.hex(Digest.sha256(Sketches.png(seed: seed)))))
        }
        await painter.close()
    }

    @Test func sketchesGoStraightIntoASharedInputFolderAndNoUploadIsMade() async throws {
        try await withSharedFolder("input-shared", folder: { "\($0)/comfy/input" }) { gateway, emulator, path in
            try await sketchAndWait(gateway, "shared", seeds: [1, 2])
            #expect(try await emulator.stats()["uploads"] == 0)
            #expect(gateway.app.log.contains("ComfyUI reads COMFYUI_INPUT_DIR"))
            // The last sketch under the session's one name; no temporary file or probe left.
            let left = try FileManager.default.subpathsOfDirectory(atPath: path).sorted()
            #expect(left.count == 2 && left[0] == "gateway" && left[1].hasPrefix("gateway/sketch-") && left[1].hasSuffix("-0.png"), "\(left)")
            #expect(FileManager.default.contents(atPath: "\(path)/\(left.last ?? "")").map(Array.init) == Sketches.png(seed: 2))
        }
    }

    @Test func aFolderTheBackendDoesNotReadLeavesSketchesToTheUpload() async throws {
        try await withSharedFolder("input-elsewhere", folder: { "\($0)/elsewhere" }) { gateway, emulator, path in
            try await sketchAndWait(gateway, "elsewhere", seeds: [3])
            #expect(try await emulator.stats()["uploads"] == 1)
            #expect(gateway.app.log.contains("ComfyUI does not see COMFYUI_INPUT_DIR"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: path).isEmpty)
        }
    }

    @Test func aFolderPathThatLeadsElsewhereIsProbedAgainAndSketchesGoByUploadWithTheRightImage() async throws {
        // COMFYUI_INPUT_DIR is a link to the emulator's input folder; pointed elsewhere, it is a
        // volume that came unmounted while ComfyUI runs on. Written there, a sketch would not be
        // seen, and ComfyUI would take the session's sketch from before for it.
        try await withSharedFolder("input-unshared", folder: { "\($0)/mounted" }) { gateway, emulator, path in
            let directory = (path as NSString).deletingLastPathComponent
            try FileManager.default.removeItem(atPath: path)
            try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "\(directory)/comfy/input")
            let painter = try await DrawingClient.connect(port: gateway.port, sessionID: "moved")
            var ends: [JSONValue] = []
            for seed in [4, 5, 6] {
                if seed == 5 {
                    try FileManager.default.createDirectory(atPath: "\(directory)/empty", withIntermediateDirectories: true)
                    try FileManager.default.removeItem(atPath: path)
                    try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "\(directory)/empty")
                }
                let count = await painter.messages.count
                await painter.sendSketch(Sketches.png(seed: seed))
                ends.append(try await painter.next(status: "completed", "error", after: count))
                #expect(try await resultSHA(gateway, "moved") == .string(Digest.hex(Digest.sha256(Sketches.png(seed: seed)))), "sketch \(seed)")
            }
            #expect(ends.map { $0["status"] } == ["completed", "completed", "completed"], "\(ends)")
            #expect(try await emulator.stats()["uploads"] == 2)
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(directory)/empty").isEmpty)
            #expect(gateway.app.log.contains("ComfyUI does not see COMFYUI_INPUT_DIR"))
            await painter.close()
        }
    }

    @Test func aMissingInputFolderStopsStartUpNamingTheVariable() throws {
        let directory = try TestPaths.makeTemporaryDirectory("input-missing")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let app = try appRefusal(in: directory, ["COMFYUI_INPUT_DIR": "\(directory)/nowhere"])
        #expect(app.status == 78)
        #expect(app.log.hasPrefix("invalid configuration: COMFYUI_INPUT_DIR: \(directory)/nowhere is not a folder"), "\(app.log)")
    }
}
