@testable import Comfy
import Testing

/// The decoder and the prompt state machine replaying real ComfyUI transcripts.
struct ProtocolDecodingTests {
    /// Feeds a transcript's frames to a watch the way `ComfyBackend` routes them.
    func replay(_ transcript: Transcript, outputNode: String?) throws -> PromptWatch {
        let promptID = try #require(transcript.promptID)
        var watch = PromptWatch(promptID: promptID, job: PromptJob(workflow: transcript.workflow, outputNodeID: outputNode, timeout: .seconds(1)))
        var progress: [Double] = []
        for frame in transcript.frames {
            switch frame {
            case .text(let text):
                let event = try #require(ComfyEvent.decode(Array(text.utf8)), "decodes \(text)")
                if watch.apply(event) { progress.append(watch.progress) }
            case .binary(let bytes):
                switch try #require(ComfyBinaryFrame.decode(bytes)) {
                case .imageWithMetadata(let id, let node, let mimeType, let image):
                    #expect(id == promptID)
                    watch.apply(frameFrom: node, bytes: image, mimeType: mimeType ?? "")
                case .image(let format, let image):
                    watch.apply(frameFrom: nil, bytes: image, mimeType: format == .png ? "image/png" : "image/jpeg")
                default:
                    break
                }
            }
        }
        #expect(progress == progress.sorted(), "progress never goes backwards")
        #expect(progress.allSatisfy { $0 < 1 }, "progress reaches 1 only with the result")
        return watch
    }

    @Test func saveImageRunEndsWithItsFileFromExecuted() throws {
        let watch = try replay(try Transcript.load("A1_invert_save_first"), outputNode: nil)
        #expect(watch.ending == .success)
        guard case .file(_, let reference) = watch.wantedProduct else {
            Issue.record("expected a file, got \(String(describing: watch.wantedProduct))")
            return
        }
        #expect(reference.type == "output")
        #expect(reference.filename.hasSuffix(".png"))
    }

    @Test func fullyCachedRunStillReportsItsFile() throws {
        let watch = try replay(try Transcript.load("A2_invert_save_fully_cached"), outputNode: nil)
        #expect(watch.ending == .success)
        #expect(watch.wantedProduct != nil)
    }

    @Test(arguments: ["A3_scale_blur_ws_legacy_binary", "A4_scale_blur_ws_preview_metadata"])
    func webSocketOutputArrivesAsPNGFrame(_ scenario: String) throws {
        let transcript = try Transcript.load(scenario)
        let watch = try replay(transcript, outputNode: "4")
        #expect(watch.ending == .success)
        guard case .frame(let node, let bytes, let mimeType) = watch.wantedProduct else {
            Issue.record("no frame for node 4")
            return
        }
        #expect(node == "4")
        #expect(mimeType == "image/png")
        #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]))
    }

    @Test func executionErrorCarriesTheExceptionAndNode() throws {
        let watch = try replay(try Transcript.load("C1_exec_error_blur_pad"), outputNode: nil)
        guard case .failed(let failure) = watch.ending else {
            Issue.record("expected a failure, got \(String(describing: watch.ending))")
            return
        }
        #expect(failure.exceptionType == "RuntimeError")
        #expect(failure.exceptionMessage.contains("Padding size should be less than"))
        #expect(failure.nodeType == "ImageBlur")
    }

    @Test func historyOfASuccessfulRunListsItsImagesAndHowLongItRan() throws {
        let transcript = try Transcript.load("A1_invert_save_first")
        let body = transcript.json["history"]?["body"] ?? .null
        let promptID = try #require(transcript.promptID)
        let entry = try #require(ComfyHistoryEntry.decode(body.encoded(), promptID: promptID))
        #expect(entry.outcome == .success)
        #expect(entry.images.values.flatMap { $0 }.count == 1)
        #expect(entry.executionMilliseconds == 13, "execution_start at ...675, execution_success at ...688")
        #expect(ComfyHistoryEntry.decode(Array("{}".utf8), promptID: "unknown") == nil)
    }

    @Test func historyOfAFailedRunCarriesTheError() throws {
        let transcript = try Transcript.load("C1_exec_error_blur_pad")
        let body = transcript.json["history"]?["body"] ?? .null
        let promptID = try #require(transcript.promptID)
        let entry = try #require(ComfyHistoryEntry.decode(body.encoded(), promptID: promptID))
        guard case .failed(let failure) = entry.outcome else {
            Issue.record("expected failure, got \(entry.outcome)")
            return
        }
        #expect(failure.exceptionType == "RuntimeError")
    }

    @Test func partiallyValidPromptNamesTheDroppedOutputs() throws {
        let transcript = try Transcript.load("B5_partial_valid_one_output_bad")
        let body = try #require(transcript.json["response"]?["body"])
        let receipt = ComfyPromptReceipt(promptID: "x", nodeErrors: body["node_errors"]?.objectValue ?? [:])
        #expect(!receipt.droppedOutputs.isEmpty)
    }

    @Test func textFramesAndTruncatedFramesDecodeSafely() {
        let text: [UInt8] = [0, 0, 0, 3, 0, 0, 0, 1, UInt8(ascii: "2")] + Array("width: 64".utf8)
        #expect(ComfyBinaryFrame.decode(text) == .text(nodeID: "2", text: "width: 64"))
        #expect(ComfyBinaryFrame.decode([0, 0, 0]) == nil)
        #expect(ComfyBinaryFrame.decode([0, 0, 0, 4, 0, 0, 1, 0, 1]) == nil)
        #expect(ComfyEvent.decode(Array("not json".utf8)) == nil)
    }

    @Test func typesTheGatewayIgnoresAreKnownByNameWithoutBeingParsed() {
        // As ComfyUI's send_json lays it out: a progress_state is `.other` even with data that would not parse.
        #expect(ComfyEvent.decode(Array(#"{"type": "progress_state", "data": {"nodes": ["#.utf8)) == .other(type: "progress_state"))
        #expect(ComfyEvent.decode(Array(#"{"type": "crystools.monitor", "data": {}}"#.utf8)) == .other(type: "crystools.monitor"))
        #expect(ComfyEvent.decode(Array(#"{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 3}}}}"#.utf8)) == .other(type: "status"))
        // Acted-on types are parsed in full, in that layout and in any other.
        #expect(ComfyEvent.decode(Array(#"{"type": "execution_success", "data": {"prompt_id": "p"}}"#.utf8)) == .executionSuccess(promptID: "p"))
        #expect(ComfyEvent.decode(Array(#"{"data": {"prompt_id": "p"}, "type": "execution_success"}"#.utf8)) == .executionSuccess(promptID: "p"))
        #expect(ComfyEvent.decode(Array(#"{"type":"execution_success","data":{"prompt_id":"p"}}"#.utf8)) == .executionSuccess(promptID: "p"))
        #expect(ComfyEvent.decode(Array(#"{"type": "execution_success", "data": {"prompt_id": "#.utf8)) == nil)
        // Only what can change a prompt goes on to the backend.
        #expect(!ComfyEvent.other(type: "progress_state").concernsAPrompt)
        #expect(ComfyEvent.executing(promptID: "p", node: nil).concernsAPrompt)
    }

    @Test func lateJoinerReplayWithoutPromptIDDecodes() {
        let event = ComfyEvent.decode(Array(#"{"type": "executing", "data": {"node": "11"}}"#.utf8))
        #expect(event == .executing(promptID: nil, node: "11"))
    }
}

/// The sketch probe's refusals that fuzzing and reviews found.
struct ImageProbeTests {
    /// A PNG's chunks: the signature, then each chunk as length, type, data and a CRC (not checked here).
    static func png(_ chunks: [(String, [UInt8])]) -> [UInt8] {
        var bytes: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        for (type, data) in chunks {
            bytes += withUnsafeBytes(of: UInt32(data.count).bigEndian) { Array($0) }
            bytes += Array(type.utf8) + data + [0, 0, 0, 0]
        }
        return bytes
    }

    /// IHDR's 13 bytes: width, height, 8-bit RGBA.
    static func header(_ width: UInt32, _ height: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        for value in [width, height] {
            bytes += withUnsafeBytes(of: value.bigEndian) { Array($0) }
        }
        return bytes + [8, 6, 0, 0, 0]
    }

    @Test func aSecondHeaderChunkCannotHideAHugeCanvasBehindASmallOne() throws {
        // Pillow takes the last IHDR before the image data: 12000×12000, not 1×1.
        let hidden = Self.png([("IHDR", Self.header(1, 1)), ("IHDR", Self.header(12000, 12000)), ("IDAT", []), ("IEND", [])])
        #expect(throws: ImageProbe.Rejection(description: "a PNG with two header chunks is not accepted")) { try ImageProbe.probe(hidden) }
        let short = Self.png([("IHDR", Array(Self.header(1, 1).prefix(12))), ("IDAT", []), ("IEND", [])])
        #expect(throws: ImageProbe.Rejection.self) { try ImageProbe.probe(short) }
        let plain = Self.png([("IHDR", Self.header(64, 48)), ("tEXt", Array("a\u{0}b".utf8)), ("IDAT", []), ("IEND", [])])
        #expect(try ImageProbe.probe(plain) == ImageProbe(mimeType: "image/png", width: 64, height: 48))
    }

    @Test func aJPEGWhoseHeightComesLaterIsRefusedBeforeAnyDecoder() throws {
        // SOF0 declaring 4×0 (the height left to a DNL marker): 0 pixels would pass every limit.
        let jpeg: [UInt8] = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00,
            0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0x00, 0x00, 0x04, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9,
        ]
        #expect(throws: ImageProbe.Rejection.self) { try ImageProbe.probe(jpeg) }
        var sized = jpeg
        sized[26] = 0x03  // height 3
        #expect(try ImageProbe.probe(sized) == ImageProbe(mimeType: "image/jpeg", width: 4, height: 3))
    }

    /// SOF0 with the given size.
    static func frame(width: Int, height: Int) -> [UInt8] {
        [0xFF, 0xC0, 0x00, 0x11, 0x08, UInt8(height >> 8), UInt8(height & 0xFF), UInt8(width >> 8), UInt8(width & 0xFF), 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01]
    }

    @Test func aJPEGThatHidesItsRealFrameBehindALengthlessMarkerIsRefused() throws {
        // An attacker's review: RST0 (FF D0) has no length. Read as one, the FF E0 after it sends
        // the walk 65,504 bytes on, onto a forged 64×64 frame inside a comment; decoders skip
        // RST0, read APP0 and the comment, and decode the 12000×12000 frame after them.
        let app0: [UInt8] = [0xFF, 0xE0, 0x00, 0x10] + Array("JFIF".utf8) + [0, 1, 1, 0, 0, 1, 0, 1, 0, 0]
        let forgedAt = 65_508
        let commentData = [UInt8](repeating: 0, count: forgedAt - (4 + app0.count + 4)) + Self.frame(width: 64, height: 64)
        let comment: [UInt8] = [0xFF, 0xFE, UInt8((commentData.count + 2) >> 8), UInt8((commentData.count + 2) & 0xFF)] + commentData
        let jpeg: [UInt8] = [0xFF, 0xD8, 0xFF, 0xD0] + app0 + comment + Self.frame(width: 12000, height: 12000) + [0xFF, 0xD9]
        #expect(Array(jpeg[forgedAt..<forgedAt + 2]) == [0xFF, 0xC0])
        #expect(throws: ImageProbe.Rejection.self) { try ImageProbe.probe(jpeg) }
    }

    @Test func aMultiPictureJPEGIsCutToItsFirstPictureWhichPillowOpensAsOneFrame() throws {
        // Made by Pillow 13 (`save(..., "MPO", save_all=True, append_images=[second])`); it opens it as MPO, n_frames 2.
        let mpo = try Transcript.fixtureBytes("images/two-frames.mpo")
        #expect(throws: ImageProbe.Rejection(description: "multi-picture JPEGs (MPO) are not accepted")) { try ImageProbe.probe(mpo) }
        // Cut: no MPF segment, one picture to its EOI (Pillow 13 opens this as JPEG, n_frames 1).
        let first = ImageProbe.firstPicture(mpo)
        #expect(first.count == 633, "the 633 bytes that Pillow 13 opens as one 16×16 JPEG frame, of \(mpo.count)")
        #expect(first.suffix(2) == [0xFF, 0xD9])
        #expect(!first.indices.dropLast(3).contains { Array(first[$0..<$0 + 4]) == Array("MPF\u{0}".utf8) })
        #expect(try ImageProbe.probe(first) == ImageProbe(mimeType: "image/jpeg", width: 16, height: 16))
        // Anything else comes back as it is.
        let single: [UInt8] = [0xFF, 0xD8] + Self.frame(width: 64, height: 64) + [0xFF, 0xD9]
        #expect(ImageProbe.firstPicture(single) == single)
        let app2: [UInt8] = [0xFF, 0xE2, 0x00, 0x0A] + Array("MPF".utf8) + [0, 0x4D, 0x4D, 0, 0x2A]
        let built: [UInt8] = [0xFF, 0xD8] + app2 + Self.frame(width: 64, height: 64) + [0xFF, 0xD9]
        #expect(throws: ImageProbe.Rejection.self) { try ImageProbe.probe(built) }
        // Other APP2 segments (an ICC profile) still pass.
        let icc: [UInt8] = [0xFF, 0xE2, 0x00, 0x10] + Array("ICC_PROFILE".utf8) + [0, 1, 1]
        let plain: [UInt8] = [0xFF, 0xD8] + icc + Self.frame(width: 64, height: 64) + [0xFF, 0xD9]
        #expect(try ImageProbe.probe(plain) == ImageProbe(mimeType: "image/jpeg", width: 64, height: 64))
    }

    @Test func aJPEGWithTwoFrameHeadersIsRefused() throws {
        let jpeg: [UInt8] = [0xFF, 0xD8] + Self.frame(width: 64, height: 64) + Self.frame(width: 12000, height: 12000) + [0xFF, 0xD9]
        #expect(throws: ImageProbe.Rejection.self) { try ImageProbe.probe(jpeg) }
        let one: [UInt8] = [0xFF, 0xD8] + Self.frame(width: 64, height: 64) + [0xFF, 0xD9]
        #expect(try ImageProbe.probe(one) == ImageProbe(mimeType: "image/jpeg", width: 64, height: 64))
    }
}
