import Foundation

/// An exclusive `flock` on a file, held until this process exits: the descriptor is never
/// closed, and no child inherits it (`O_CLOEXEC`), so the lock goes with the process alone.
public enum ProcessLock {
    public enum Failure: Error {
        /// Another process holds it.
        case held
        /// The file cannot be opened: the system's reason.
        case unusable(String)
    }

    /// Takes the lock on `path` (made if missing), waiting up to `wait` for its holder to go;
    /// returns the open descriptor.
    @discardableResult
    public static func take(_ path: String, waitingUpTo wait: Duration = .zero) throws(Failure) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .unusable(String(cString: strerror(errno))) }
        let deadline = ContinuousClock.now + wait
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard ContinuousClock.now < deadline else {
                close(fd)
                throw .held
            }
            usleep(100_000)
        }
        return fd
    }
}
