/// Writes `JSONValue` compactly with sorted keys (equal values, equal bytes), `/` unescaped and
/// integers without a fraction (ComfyUI's INT inputs reject `5.0`).
struct JSONWriter {
    private(set) var output: [UInt8] = []

    mutating func write(_ value: JSONValue) {
        switch value {
        case .null: output += Array("null".utf8)
        case .bool(let flag): output += Array((flag ? "true" : "false").utf8)
        case .number(let number): writeNumber(number)
        case .largeInteger(let text): output += Array(text.utf8)
        case .string(let text): writeString(text)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (position, element) in elements.enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                write(element)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let members):
            output.append(UInt8(ascii: "{"))
            for (position, key) in members.keys.sorted().enumerated() {
                if position > 0 { output.append(UInt8(ascii: ",")) }
                writeString(key)
                output.append(UInt8(ascii: ":"))
                write(members[key]!)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    private mutating func writeNumber(_ number: Double) {
        guard number.isFinite else {
            output += Array("null".utf8)
            return
        }
        // Every whole double below 2^53 is exact as an Int64: written as digits, not 1e+15.
        if number.rounded() == number, abs(number) < 9_007_199_254_740_992 {
            output += Array(String(Int64(number)).utf8)
        } else {
            output += Array("\(number)".utf8)
        }
    }

    private mutating func writeString(_ text: String) {
        let hex = Array("0123456789abcdef".utf8)
        output.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): output += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): output += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: output += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: output += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: output += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0x08: output += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case 0x0C: output += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case 0..<0x20: output += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}
