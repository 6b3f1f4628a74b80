import NIOCore

/// The file names sketches are written under in ComfyUI's input folder: one slot per open
/// session, given to a new session once its holder is dropped.
///
/// ComfyUI has no delete for uploads, and session ids are the client's to pick: named after them,
/// sketch files would pile up in ComfyUI's input folder, one per id ever used, until its disk is
/// full. Slots bound them to the most sessions ever open at once (`MAX_SESSIONS`), times the
/// three sketch types, for each prefix (one per `STATE_DIR`: `SketchFilePrefix`).
///
/// A session is dropped only when idle (no generation running or waiting), so no prompt of its
/// still loads the file when another session takes it. The least recently freed slot goes first,
/// which leaves the longest time for a prompt ComfyUI still held after its job gave up.
struct SketchSlots: Sendable {
    /// Sets this process's names apart from another gateway's on the same ComfyUI: two that
    /// shared a name would each load the other's painter's sketch.
    let prefix: String
    private var free = CircularBuffer<Int>()
    private var next = 0

    init(prefix: String) {
        self.prefix = prefix
    }

    /// A slot nobody holds.
    mutating func take() -> Int {
        if let slot = free.popFirst() { return slot }
        defer { next += 1 }
        return next
    }

    /// Its session was dropped: the slot may be taken again.
    mutating func giveBack(_ slot: Int) {
        free.append(slot)
    }

    /// The file a slot's sketch of this type is written under.
    func filename(_ slot: Int, mimeType: String) -> String {
        "sketch-\(prefix)-\(slot).\(fileExtension(forMimeType: mimeType))"
    }

    /// Whether a name, as LoadImage is given it (`subfolder/file`), is one of this prefix's sketch files.
    static func isSketchFile(_ name: String, prefix: String, subfolder: String) -> Bool {
        var rest = Substring(name)
        let folder = subfolder.isEmpty ? "" : subfolder + "/"
        guard rest.hasPrefix(folder + "sketch-\(prefix)-") else { return false }
        rest = rest.dropFirst(folder.count + "sketch-\(prefix)-".count)
        guard let dot = rest.firstIndex(of: "."), dot > rest.startIndex, rest[..<dot].allSatisfy(\.isASCIIDigit) else { return false }
        return ["png", "jpg", "webp", "gif", "bin"].contains(rest[rest.index(after: dot)...])
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
