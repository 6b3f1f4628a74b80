@testable import Comfy
import Testing

/// Which event belongs to which prompt, and what follows: inputs in, effects out, no I/O.
struct PromptTrackerTests {
    enum Input: Sendable {
        case track(String, client: String)
        case connected(String)
        case disconnected
        case event(ComfyEvent)
        case frame(ComfyBinaryFrame)
        case settle(String, PromptWatch.Ending)
    }

    struct Scenario: CustomTestStringConvertible, Sendable {
        var name: String
        /// Each input with the effects it must produce.
        var steps: [(Input, [PromptTracker.Effect])]
        /// Prompts still tracked at the end, and whether each missed events.
        var tracked: [String: Bool] = [:]
        var testDescription: String { name }
    }

    /// A two-node job: KSampler "3" then SaveImageWebsocket "9".
    static let job = PromptJob(workflow: [
        "3": .object(["class_type": "KSampler", "inputs": .object([:])]),
        "9": .object(["class_type": "SaveImageWebsocket", "inputs": .object([:])]),
    ], outputNodeID: nil, timeout: .seconds(60))

    static let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 1, 2, 3]
    static let jpeg: [UInt8] = [0xFF, 0xD8, 0xFF, 4, 5]

    static let scenarios: [Scenario] = [
        Scenario(name: "a prompt's events raise its progress and its end hands it over", steps: [
            (.connected("c1"), []),
            (.track("p", client: "c1"), []),
            (.event(.executionStart(promptID: "p")), [.activity, .started(promptID: "p")]),
            (.event(.executing(promptID: "p", node: "3")), [.activity]),
            (.event(.progress(promptID: "p", node: "3", value: 1, max: 2)), [.activity, .progressed(promptID: "p", 0.25)]),
            (.event(.executing(promptID: "p", node: "9")), [.activity, .progressed(promptID: "p", 0.5)]),
            (.event(.executionSuccess(promptID: "p")), [.activity, .ended(promptID: "p")]),
        ], tracked: ["p": false]),
        Scenario(name: "events of prompts we did not submit do nothing", steps: [
            (.connected("c1"), []),
            (.track("p", client: "c1"), []),
            (.event(.executionStart(promptID: "someone-else")), []),
            (.event(.progress(promptID: nil, node: "3", value: 1, max: 2)), []),
            (.frame(.image(format: .png, bytes: png)), []),
            (.event(.other(type: "status")), []),
        ], tracked: ["p": false]),
        Scenario(name: "frames and progress without a prompt id belong to the running prompt", steps: [
            (.connected("c1"), []),
            (.track("p", client: "c1"), []),
            (.event(.executing(promptID: "p", node: "9")), [.activity]),
            (.event(.progress(promptID: nil, node: "9", value: 1, max: 1)), [.activity, .progressed(promptID: "p", 0.5)]),
            (.frame(.image(format: .png, bytes: png)), [.activity]),
            (.event(.executing(promptID: nil, node: nil)), [.activity, .ended(promptID: "p")]),
        ], tracked: ["p": false]),
        Scenario(name: "a sampler's JPEG is a preview, not a result", steps: [
            (.connected("c1"), []),
            (.track("p", client: "c1"), []),
            (.event(.executing(promptID: "p", node: "3")), [.activity]),
            (.frame(.imageWithMetadata(promptID: "p", nodeID: "3", mimeType: "image/jpeg", bytes: jpeg)),
             [.activity, .preview(promptID: "p", bytes: jpeg, mimeType: "image/jpeg")]),
        ], tracked: ["p": false]),
        Scenario(name: "a message too large to read fails the prompt running then; with none of ours running, it is only told", steps: [
            (.connected("c1"), []),
            (.track("p", client: "c1"), []),
            (.event(.messageTooLarge(bytes: 70_000, binary: false)), [.messageTooLarge(promptID: nil, bytes: 70_000)]),
            (.event(.executing(promptID: "p", node: "9")), [.activity]),
            (.event(.messageTooLarge(bytes: 120_000, binary: true)), [.activity, .messageTooLarge(promptID: "p", bytes: 120_000)]),
        ], tracked: ["p": false]),
        Scenario(name: "a drop marks prompts; the next socket reconciles them and those of older sockets", steps: [
            (.connected("c1"), []),
            (.track("b", client: "c1"), []),
            (.track("a", client: "c1"), []),
            (.disconnected, []),
            (.event(.executionSuccess(promptID: "a")), [.activity, .ended(promptID: "a")]),
            (.connected("c2"), [.reconcile(["a", "b"])]),
        ], tracked: ["a": true, "b": true]),
        Scenario(name: "a prompt settled from history ends; an unknown one does not", steps: [
            (.connected("c1"), []),
            (.track("p", client: "c1"), []),
            (.settle("p", .success), [.ended(promptID: "p")]),
            (.settle("unknown", .interrupted), []),
        ], tracked: ["p": false]),
        Scenario(name: "an execution error ends the prompt", steps: [
            (.connected("c1"), []),
            (.track("p", client: "c1"), []),
            (.event(.executionError(ComfyExecutionFailure(promptID: "p", nodeID: "3", nodeType: "KSampler", exceptionType: "RuntimeError", exceptionMessage: "boom"))),
             [.activity, .ended(promptID: "p")]),
        ], tracked: ["p": false]),
    ]

    @Test(arguments: scenarios)
    func scenario(_ scenario: Scenario) {
        var tracker = PromptTracker()
        for (index, (input, expected)) in scenario.steps.enumerated() {
            let effects: [PromptTracker.Effect]
            switch input {
            case .track(let id, let client):
                tracker.track(PromptWatch(promptID: id, job: Self.job), clientID: client)
                effects = []
            case .connected(let client): effects = tracker.connected(client)
            case .disconnected:
                tracker.disconnected()
                effects = []
            case .event(let event): effects = tracker.apply(event)
            case .frame(let frame): effects = tracker.apply(frame)
            case .settle(let id, let ending): effects = tracker.settle(id, ending, files: [:])
            }
            #expect(effects == expected, "step \(index + 1)")
        }
        #expect(Dictionary(uniqueKeysWithValues: tracker.slots.map { ($0.key, $0.value.watch.missedEvents) }) == scenario.tracked)
    }

    @Test func theWantedFrameIsKeptForTheEnding() {
        var tracker = PromptTracker()
        _ = tracker.connected("c1")
        tracker.track(PromptWatch(promptID: "p", job: Self.job), clientID: "c1")
        _ = tracker.apply(.executing(promptID: "p", node: "9"))
        _ = tracker.apply(ComfyBinaryFrame.imageWithMetadata(promptID: "p", nodeID: "9", mimeType: "image/png", bytes: Self.png))
        #expect(tracker.slot("p")?.watch.wantedProduct == .frame(node: "9", bytes: Self.png, mimeType: "image/png"))
    }
}
