import Foundation

/// A JSON document of any shape: ComfyUI workflows and error bodies are open-ended.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    /// A whole number a double cannot hold exactly (beyond 2^53, to 64 bits: ComfyUI's seeds
    /// go to 2^64 - 1), kept as written so that it reaches ComfyUI as it was sent.
    case largeInteger(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

extension JSONValue {
    /// Parses JSON bytes; throws on malformed input (or nesting deeper than 512).
    /// Parses a JSON text; `maxDepth` and `maxValues` may only lower the parser's own limits
    /// (a small message needs no room for a workflow's twenty thousand values).
    public static func parse<Bytes: Collection>(
        _ bytes: Bytes, maxDepth: Int = JSONParser.maxDepth, maxValues: Int = JSONParser.maxValues
    ) throws -> JSONValue where Bytes.Element == UInt8 {
        if let parsed = try bytes.withContiguousStorageIfAvailable({ try JSONParser.parse($0, maxDepth: maxDepth, maxValues: maxValues) }) { return parsed }
        return try Array(bytes).withUnsafeBufferPointer { try JSONParser.parse($0, maxDepth: maxDepth, maxValues: maxValues) }
    }

    /// Serialises compactly with sorted keys, so equal values give equal bytes.
    public func encoded() -> [UInt8] {
        var writer = JSONWriter()
        writer.write(self)
        return writer.output
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// Whether arrays and objects nest in it more than `limit` levels deep (a scalar is 0).
    public func nests(deeperThan limit: Int) -> Bool {
        guard limit >= 0 else { return true }
        switch self {
        case .array(let elements): return elements.contains { $0.nests(deeperThan: limit - 1) }
        case .object(let members): return members.values.contains { $0.nests(deeperThan: limit - 1) }
        default: return false
        }
    }

    /// How many values this one is made of, itself included.
    public var valueCount: Int {
        switch self {
        case .array(let elements): 1 + elements.reduce(0) { $0 + $1.valueCount }
        case .object(let members): 1 + members.values.reduce(0) { $0 + $1.valueCount }
        default: 1
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .number(let value): value
        case .largeInteger(let text): Double(text)
        default: nil
        }
    }

    public var intValue: Int? {
        if case .number(let value) = self, value.rounded() == value, abs(value) < 9.0e15 { return Int(value) }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    public subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
