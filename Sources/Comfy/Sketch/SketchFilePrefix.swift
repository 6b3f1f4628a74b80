import Foundation

/// What sets this gateway's sketch file names apart from another's on the same ComfyUI
/// (`SketchSlots.prefix`): two that shared names would load each other's painters' sketches.
///
/// Kept in `STATE_DIR/sketch-files`, so that a restart (a deploy, the supervisor after a crash)
/// writes the files it wrote before instead of a new set each time, and locked (`flock`) for as
/// long as this process lives: a second process on the same `STATE_DIR` makes a prefix of its own.
public enum SketchFilePrefix {
    /// The prefix in `directory`'s file, made the first time; a fresh one when another process
    /// holds the file, or it cannot be used.
    public static func claim(in directory: String) -> String {
        let fresh = Digest.hex(RandomSecret.bytes(6))
        let fd = open("\(directory)/sketch-files", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return fresh }
        // Held until the process ends: the descriptor is never closed.
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return fresh
        }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(fd, &buffer, buffer.count)
        let stored = count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : ""
        if stored.count == 12, stored.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) { return stored }
        guard ftruncate(fd, 0) == 0, pwrite(fd, fresh, fresh.utf8.count, 0) == fresh.utf8.count else { return fresh }
        return fresh
    }
}
