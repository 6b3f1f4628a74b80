import Foundation

/// Writes every byte to the descriptor, resuming after short and interrupted writes; `false` on
/// an error (see `errno`).
func writeAll(_ bytes: [UInt8], to fd: Int32) -> Bool {
    bytes.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0, errno == EINTR { continue }
            if written <= 0 {
                if written == 0 { errno = EIO }
                return false
            }
            offset += written
        }
        return true
    }
}
