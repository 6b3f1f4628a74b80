/// A `.env` file in the syntax python-dotenv and docker compose read: `KEY=value` lines,
/// `export ` prefixes, blank and `#` comment lines, inline ` # comments` after unquoted values,
/// `'single'` (literal) and `"double"` quotes (with `\n`, `\t`, `\"`, `\\` escapes), quoted
/// values over several lines, and `${NAME}` expansion in unquoted and double-quoted values.
enum DotEnv {
    /// Why a file could not be read; start-up names the line.
    struct SyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
        var line: Int
        var problem: String
        var description: String { ".env line \(line): \(problem)" }
    }

    /// The variables of `text`, later lines winning; `${NAME}` takes an earlier line's value, else `environment`'s.
    static func parse(_ text: String, environment: [String: String] = [:]) throws(SyntaxError) -> [String: String] {
        var parser = Parser(scalars: Array(text.unicodeScalars), environment: environment)
        return try parser.parse()
    }

    private struct Parser {
        let scalars: [Unicode.Scalar]
        let environment: [String: String]
        var index = 0
        var line = 1
        var result: [String: String] = [:]

        init(scalars: [Unicode.Scalar], environment: [String: String]) {
            self.scalars = scalars
            self.environment = environment
        }

        var current: Unicode.Scalar? { index < scalars.count ? scalars[index] : nil }

        mutating func advance() {
            if current == "\n" { line += 1 }
            index += 1
        }

        mutating func skipSpaces() {
            while let scalar = current, scalar == " " || scalar == "\t" { advance() }
        }

        mutating func skipToLineEnd() {
            while let scalar = current, scalar != "\n" { advance() }
            if current == "\n" { advance() }
        }

        mutating func parse() throws(SyntaxError) -> [String: String] {
            while current != nil {
                skipSpaces()
                guard let scalar = current else { break }
                if scalar == "\n" || scalar == "\r" || scalar == "#" {
                    skipToLineEnd()
                    continue
                }
                let startLine = line
                var key = readKey()
                if key == "export", current == " " || current == "\t" {
                    skipSpaces()
                    key = readKey()
                }
                guard !key.isEmpty, !(key.first?.isNumber ?? true) else {
                    throw SyntaxError(line: startLine, problem: "expected NAME=value")
                }
                skipSpaces()
                guard current == "=" else { throw SyntaxError(line: startLine, problem: "expected = after \(key)") }
                advance()
                skipSpaces()
                result[key] = try readValue(startLine: startLine)
            }
            return result
        }

        mutating func readKey() -> String {
            var key = ""
            while let scalar = current, scalar.isASCII, scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || "_.-".unicodeScalars.contains(scalar) {
                key.unicodeScalars.append(scalar)
                advance()
            }
            return key
        }

        mutating func readValue(startLine: Int) throws(SyntaxError) -> String {
            switch current {
            case "'":
                advance()
                var value = ""
                while let scalar = current, scalar != "'" {
                    if scalar == "\\", index + 1 < scalars.count, scalars[index + 1] == "'" { advance() }
                    value.unicodeScalars.append(current!)
                    advance()
                }
                guard current == "'" else { throw SyntaxError(line: startLine, problem: "a ' quote is not closed") }
                advance()
                try endOfValue(startLine: startLine)
                return value
            case "\"":
                advance()
                var value = ""
                while let scalar = current, scalar != "\"" {
                    if scalar == "\\", index + 1 < scalars.count {
                        advance()
                        switch current! {
                        case "n": value += "\n"
                        case "t": value += "\t"
                        case "r": value += "\r"
                        case "\"", "\\", "'", "$": value.unicodeScalars.append(current!)
                        default: value += "\\"; value.unicodeScalars.append(current!)
                        }
                        advance()
                    } else if scalar == "$", let expanded = readExpansion() {
                        value += expanded
                    } else {
                        value.unicodeScalars.append(scalar)
                        advance()
                    }
                }
                guard current == "\"" else { throw SyntaxError(line: startLine, problem: "a \" quote is not closed") }
                advance()
                try endOfValue(startLine: startLine)
                return value
            default:
                var value = ""
                var previousWasSpace = true
                while let scalar = current, scalar != "\n" {
                    // ` #` starts a comment; a `#` inside a word (`http://x/#y`) does not.
                    if scalar == "#", previousWasSpace { break }
                    if scalar == "$", let expanded = readExpansion() {
                        value += expanded
                        previousWasSpace = false
                        continue
                    }
                    value.unicodeScalars.append(scalar)
                    previousWasSpace = scalar == " " || scalar == "\t"
                    advance()
                }
                skipToLineEnd()
                return value.trimmingTrailingSpace()
            }
        }

        /// After a closing quote: spaces, then an optional comment, then the end of the line.
        mutating func endOfValue(startLine: Int) throws(SyntaxError) {
            skipSpaces()
            if current == "\r" { advance() }
            switch current {
            case nil, "\n", "#": skipToLineEnd()
            default: throw SyntaxError(line: startLine, problem: "unexpected text after the closing quote")
            }
        }

        /// `${NAME}` at the cursor: its value (earlier lines, then the environment, else empty).
        mutating func readExpansion() -> String? {
            guard index + 1 < scalars.count, scalars[index + 1] == "{",
                  let close = scalars[(index + 2)...].firstIndex(of: "}") else { return nil }
            let name = String(String.UnicodeScalarView(scalars[(index + 2)..<close]))
            guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") }) else { return nil }
            index = close + 1
            return result[name] ?? environment[name] ?? ""
        }
    }
}

private extension String {
    func trimmingTrailingSpace() -> String {
        var scalars = unicodeScalars
        while let last = scalars.last, last == " " || last == "\t" || last == "\r" { scalars.removeLast() }
        return String(scalars)
    }
}
