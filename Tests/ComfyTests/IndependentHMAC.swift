import Foundation

/// HMAC-SHA1 + base64 computed by Python's standard library in a child process: an implementation
/// that shares nothing with the gateway's.
enum IndependentHMAC {
    static func sha1Base64(key: String, message: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-c",
            "import base64,hashlib,hmac,sys; k,m=sys.stdin.buffer.read().split(b'\\0',1); print(base64.b64encode(hmac.new(k,m,hashlib.sha1).digest()).decode())",
        ]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(key.utf8) + Data([0]) + Data(message.utf8))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
