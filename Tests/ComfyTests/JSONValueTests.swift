import Comfy
import Foundation
import Testing

/// The gateway's own JSON reader and writer: every request body and ComfyUI answer goes through them.
struct JSONValueTests {
    @Test(arguments: [
        (#"{"a": [1, 2.5, -3e2, true, false, null], "b": {"c": "d"}}"#, JSONValue.object([
            "a": .array([1, .number(2.5), .number(-300), true, false, .null]), "b": .object(["c": "d"]),
        ])),
        (#"  "plain"  "#, "plain"),
        (#""esc\"aped\\ \/ \b\f\n\r\t""#, .string("esc\"aped\\ / \u{08}\u{0C}\n\r\t")),
        (#""\u00e9\u4e2d\ud83c\udfa8""#, "é中🎨"),
        (#""lone \ud800 surrogate""#, "lone \u{FFFD} surrogate"),
        ("\"raw UTF-8: 中文 🎨\"", "raw UTF-8: 中文 🎨"),
        ("0", 0), ("-0.5", .number(-0.5)), ("1E+2", 100),
        ("[]", .array([])), ("{}", .object([:])),
    ])
    func parsesWhatRFC8259Allows(_ text: String, _ expected: JSONValue) throws {
        #expect(try JSONValue.parse(Array(text.utf8)) == expected)
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":}", "{\"a\" 1}", "01", "1.", ".5", "-", "1e", "tru", "nul", "\"open",
        "\"bad \\x escape\"", "\"\\u12\"", "\"tab\there\"", "[1] 2", "{'single': 1}", "NaN", "1e999",
        // A member named twice: refused, as parsers disagree on which one wins.
        #"{"k": 1, "k": 2}"#,
    ])
    func refusesMalformedInput(_ text: String) {
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(text.utf8)) }
    }

    @Test func refusesNestingDeeperThanTheLimitInsteadOfOverflowingTheStack() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(deep.utf8)) }
        let limit = JSONParser.maxDepth
        let fine = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(try JSONValue.parse(Array(fine.utf8)).arrayValue != nil)
        let over = "[" + fine + "]"
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(over.utf8)) }
    }

    @Test func aCallerMayOnlyLowerTheLimits() throws {
        let swarm = Array(("[" + Array(repeating: "[0]", count: 100).joined(separator: ",") + "]").utf8)
        #expect(try JSONValue.parse(swarm).arrayValue?.count == 100)
        #expect(throws: (any Error).self) { try JSONValue.parse(swarm, maxValues: 64) }
        #expect(throws: (any Error).self) { try JSONValue.parse(swarm, maxDepth: 1) }
        #expect(try JSONValue.parse(Array(#"{"a":1}"#.utf8), maxDepth: 10_000, maxValues: .max).objectValue?.count == 1)
        let deep = Array((String(repeating: "[", count: JSONParser.maxDepth + 1) + String(repeating: "]", count: JSONParser.maxDepth + 1)).utf8)
        #expect(throws: (any Error).self, "a higher limit is not taken") { try JSONValue.parse(deep, maxDepth: 10_000) }
    }

    @Test func refusesMoreValuesThanTheBudgetInsteadOfExhaustingMemory() throws {
        let many = "[" + Array(repeating: "[0]", count: 600_000).joined(separator: ",") + "]"
        #expect(throws: (any Error).self) { try JSONValue.parse(Array(many.utf8)) }
        let enough = "[" + Array(repeating: "0", count: 100_000).joined(separator: ",") + "]"
        #expect(try JSONValue.parse(Array(enough.utf8)).arrayValue?.count == 100_000)
    }

    @Test func writesSortedCompactJSONThatFoundationReadsBack() throws {
        let value = JSONValue.object([
            "z": "slash / quote \" backslash \\ newline \n control \u{01} 中",
            "a": .array([.number(5), .number(0.25), .number(-1e20), .number(9_007_199_254_740_991), .null, true]),
            "m": .object(["y": 1, "b": 2]),
        ])
        let bytes = value.encoded()
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix(#"{"a":[5,0.25,-1e+20,"#))
        #expect(text.contains(#""m":{"b":2,"y":1}"#))
        #expect(text.contains(#"slash / quote \" backslash \\ newline \n control \u0001 中"#))
        #expect(try JSONValue.parse(bytes) == value)
        let foundation = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        #expect(foundation?["z"] as? String == "slash / quote \" backslash \\ newline \n control \u{01} 中")
        #expect(JSONValue.number(.nan).encoded() == Array("null".utf8))
    }

    /// ComfyUI's seeds go to 2^64 - 1; a double holds whole numbers exactly only to 2^53.
    @Test(arguments: ["12345678901234567", "18446744073709551615", "-9223372036854775808", "9007199254740993"])
    func aWholeNumberPast2To53ReachesComfyUIAsItWasSent(_ literal: String) throws {
        let workflow = try JSONValue.parse(Array(#"{"3": {"class_type": "KSampler", "inputs": {"seed": \#(literal)}}}"#.utf8))
        #expect(workflow["3"]?["inputs"]?["seed"] == .largeInteger(literal))
        #expect(String(decoding: workflow.encoded(), as: UTF8.self) == #"{"3":{"class_type":"KSampler","inputs":{"seed":\#(literal)}}}"#)
        #expect(workflow["3"]?["inputs"]?["seed"]?.doubleValue == Double(literal))
    }

    @Test func numbersADoubleHoldsStayNumbers() throws {
        // 2^53 - 1 is exact; a fraction or an exponent is a float's anyway; past 64 bits, a float's too.
        #expect(try JSONValue.parse(Array("9007199254740991".utf8)) == .number(9_007_199_254_740_991))
        #expect(try JSONValue.parse(Array("1e17".utf8)) == .number(1e17))
        #expect(try JSONValue.parse(Array("12345678901234567.0".utf8)) == .number(12_345_678_901_234_567.0))
        #expect(try JSONValue.parse(Array("123456789012345678901".utf8)) == .number(123_456_789_012_345_678_901.0))
    }

    @Test func agreesWithFoundationOnTheCapturedComfyUIMessages() throws {
        let directory = try #require(Bundle.module.resourceURL?.appendingPathComponent("Fixtures"))
        var checked = 0
        for case let url as URL in FileManager.default.enumerator(at: directory, includingPropertiesForKeys: nil)! where url.pathExtension == "json" {
            let data = try Data(contentsOf: url)
            guard let foundation = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { continue }
            let ours = try JSONValue.parse(Array(data))
            let reparsed = try JSONSerialization.jsonObject(with: Data(ours.encoded()), options: [.fragmentsAllowed])
            #expect(NSDictionary(dictionary: ["v": foundation]).isEqual(to: ["v": reparsed]), "\(url.lastPathComponent)")
            checked += 1
        }
        #expect(checked > 0)
    }
}
