import Foundation

/// A network namespace joined to this one by a veth pair, for a process whose network a test
/// cuts. Taking this side's link down drops every packet silently, as a pulled cable does:
/// new connections time out and open ones hang, with no reset; bringing it up mends it, and
/// the open connections go on. Needs root (as `make test` runs here) and iproute2.
final class NetworkNamespace: Sendable {
    let name: String
    /// This side's address, where what the namespace reaches listens.
    let hostAddress: String
    /// The namespace's own address.
    let address: String
    private let hostLink: String
    private let logDirectory: String

    static var isAvailable: Bool { getuid() == 0 && FileManager.default.isExecutableFile(atPath: ip) }
    private static let ip = "/usr/sbin/ip"

    init(directory: String) throws {
        logDirectory = directory
        let tag = String(UInt32.random(in: 0..<0xFFFFFF), radix: 16)
        name = "cgw-\(tag)"
        hostLink = "cgwh\(tag)"
        let inner = "cgwn\(tag)"
        // A /30 of 10.77.0.0/16 of its own, so that runs side by side do not collide.
        let subnet = Int.random(in: 0..<16384) * 4
        hostAddress = "10.77.\(subnet / 256).\(subnet % 256 + 1)"
        address = "10.77.\(subnet / 256).\(subnet % 256 + 2)"
        try Self.run(["netns", "add", name], log: directory)
        do {
            try Self.run(["link", "add", hostLink, "type", "veth", "peer", "name", inner], log: directory)
            try Self.run(["link", "set", inner, "netns", name], log: directory)
            try Self.run(["addr", "add", "\(hostAddress)/30", "dev", hostLink], log: directory)
            try Self.run(["link", "set", hostLink, "up"], log: directory)
            try Self.run(["-n", name, "addr", "add", "\(address)/30", "dev", inner], log: directory)
            try Self.run(["-n", name, "link", "set", inner, "up"], log: directory)
            try Self.run(["-n", name, "link", "set", "lo", "up"], log: directory)
        } catch {
            remove()
            throw error
        }
    }

    /// `executable` with `arguments`, run inside the namespace.
    func command(_ executable: String, _ arguments: [String]) -> (executable: String, arguments: [String]) {
        (Self.ip, ["netns", "exec", name, executable] + arguments)
    }

    func cut() throws { try Self.run(["link", "set", hostLink, "down"], log: logDirectory) }
    func mend() throws { try Self.run(["link", "set", hostLink, "up"], log: logDirectory) }

    /// Removes the namespace, and with it the veth pair. It logs into a folder of its own: the
    /// test's is gone by now when the test passed (and never to /dev/null: ChildProcess makes
    /// its log file, and as root would replace the device with one).
    func remove() {
        guard let folder = try? TestPaths.makeTemporaryDirectory("\(name)-removal") else { return }
        try? Self.run(["link", "del", hostLink], log: folder)
        try? Self.run(["netns", "del", name], log: folder)
        try? FileManager.default.removeItem(atPath: folder)
    }

    private static func run(_ arguments: [String], log directory: String) throws {
        let process = try ChildProcess(ip, arguments, logPath: "\(directory)/ip.log")
        guard process.waitForExit(within: .seconds(10)) == 0 else { throw TestFailure("ip \(arguments.joined(separator: " ")) failed:\n\(process.log)") }
    }
}
