import Glibc

/// Changes to one folder's entries, from Linux's inotify: one non-blocking read tells whether
/// anything was created, written, renamed or removed there since the last look. The kernel
/// queues the event inside the writer's own system call, so a change is seen by any lookup
/// that starts after it.
final class FolderWatch: Sendable {
    private let fd: Int32

    /// `nil` where the folder cannot be watched (it does not exist yet, or inotify is out of watches).
    init?(directory: String) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { return nil }
        let events = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
        guard inotify_add_watch(fd, directory, UInt32(events)) >= 0 else {
            close(fd)
            return nil
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Whether events arrived since the last call (they are consumed). A failed read counts as a change.
    func drainChanges() -> Bool {
        // On the stack: every style lookup comes here, and a heap buffer per call was a tenth of
        // a /healthz request's time in the app (perf). Almost every read finds nothing (EAGAIN).
        withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 8) { buffer in
            var changed = false
            while true {
                let count = read(fd, buffer.baseAddress, buffer.count)
                if count > 0 {
                    changed = true
                    continue
                }
                return changed || (count < 0 && errno != EAGAIN)
            }
        }
    }
}
