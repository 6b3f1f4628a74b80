/// Takes the GPU server's own folders and source locations out of ComfyUI's messages before
/// they reach a caller: `cannot identify image file '/srv/comfy/input/x.png'` becomes
/// `cannot identify image file 'x.png'`, and tracebacks are dropped.
public enum ServerPathRedaction {
    /// Members of ComfyUI's error objects that hold nothing but server internals
    /// (`execution.py` puts the Python traceback, with file paths and line numbers, in them).
    static let internalKeys: Set<String> = ["traceback"]

    /// The text with every absolute path (POSIX or Windows) cut down to its last component.
    public static func redact(_ text: String) -> String {
        guard text.contains("/") || text.contains("\\") else { return text }
        var output = ""
        output.reserveCapacity(text.count)
        var index = text.startIndex
        var previous: Character? = nil
        while index < text.endIndex {
            if let end = absolutePathEnd(in: text, at: index, after: previous) {
                let path = text[index..<end]
                let last = path.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? ""
                output += last
                previous = path.last
                index = end
            } else {
                let character = text[index]
                output.append(character)
                previous = character
                index = text.index(after: index)
            }
        }
        return output
    }

    /// The JSON with every string redacted and internal members removed.
    public static func redact(_ value: JSONValue) -> JSONValue {
        switch value {
        case .string(let text): .string(redact(text))
        case .array(let items): .array(items.map(redact))
        case .object(let members):
            .object(members.filter { !internalKeys.contains($0.key) }.mapValues(redact))
        case .null, .bool, .number, .largeInteger: value
        }
    }

    /// Where an absolute path of at least two components that starts at `index` ends.
    /// A path starts after a boundary (start, space, quote, bracket, `=`, or a `:` as in
    /// `file:///srv/x`, but not `http://host/x`), so relative names such as `gateway/x.png` are
    /// left alone. Inside quotes it runs to the closing quote, spaces included.
    private static func absolutePathEnd(in text: String, at index: String.Index, after previous: Character?) -> String.Index? {
        if let previous, !(previous.isWhitespace || "'\"`([{<=,:".contains(previous)) { return nil }
        var cursor = index
        let first = text[cursor]
        if previous == ":" {
            // `scheme://host/...` is a URL; `file:///...` and `path:/...` name files.
            guard first == "/" else { return nil }
            let rest = text[cursor...]
            if rest.hasPrefix("//"), !rest.hasPrefix("///") { return nil }
        }
        if first == "/" || first == "\\" {
            cursor = text.index(after: cursor)
        } else if first.isASCII, first.isLetter {
            // `C:\` or `C:/`
            let colon = text.index(after: cursor)
            guard colon < text.endIndex, text[colon] == ":" else { return nil }
            let slash = text.index(after: colon)
            guard slash < text.endIndex, text[slash] == "\\" || text[slash] == "/" else { return nil }
            cursor = text.index(after: slash)
        } else {
            return nil
        }
        let quote: Character? = previous.flatMap { "'\"`".contains($0) ? $0 : nil }
        var separators = 0
        var componentLength = 0
        while cursor < text.endIndex {
            let character = text[cursor]
            if character == "/" || character == "\\" {
                // Runs of separators (`C:\\x` in a Python repr, `\\\\server\\share`) count once.
                if componentLength > 0 { separators += 1 }
                componentLength = 0
            } else if let quote, character == quote {
                break
            } else if quote == nil, character.isWhitespace || "'\"`)]}>,;:".contains(character) {
                break
            } else if character == "\n" {
                break
            } else {
                componentLength += 1
            }
            cursor = text.index(after: cursor)
        }
        return separators >= 1 ? cursor : nil
    }
}
