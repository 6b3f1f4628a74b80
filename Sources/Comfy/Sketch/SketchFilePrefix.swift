import Foundation

/// What sets this gateway's sketch file names apart from another's on the same ComfyUI
/// (`SketchSlots.prefix`): two that shared names would load each other's painters' sketches.
///
/// Kept in `STATE_DIR/sketch-files`, so that a restart (a deploy, the supervisor after a crash)
/// writes the files it wrote before instead of a new set each time, and locked (`flock`) for as
/// long as this process lives: a second process on the same `STATE_DIR` makes a prefix of its
/// own. The file names its host too: a `STATE_DIR` copied to another machine (a restored
/// backup, a cloned volume), or shared where `flock` locks only locally, gets a prefix anew.
public enum SketchFilePrefix {
    /// The prefix in `directory`'s file, made the first time; a fresh one when another process
    /// holds the file, or it cannot be used.
    public static func claim(in directory: String) -> String {
        let fresh = self.fresh()
        guard let fd = try? ProcessLock.take("\(directory)/sketch-files") else { return fresh }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = read(fd, &buffer, buffer.count)
        let stored = (count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : "").split(separator: " ", maxSplits: 1).map(String.init)
        let host = hostName
        if stored.count == 2, stored[1] == host, stored[0].count == 12, stored[0].allSatisfy({ $0.isHexDigit && !$0.isUppercase }) { return stored[0] }
        let line = "\(fresh) \(host)"
        guard ftruncate(fd, 0) == 0, pwrite(fd, line, line.utf8.count, 0) == line.utf8.count else { return fresh }
        return fresh
    }

    /// A prefix of one's own, kept nowhere.
    public static func fresh() -> String {
        Digest.hex(RandomSecret.bytes(6))
    }

    /// This machine's name (`gethostname`: no lookup).
    static var hostName: String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
