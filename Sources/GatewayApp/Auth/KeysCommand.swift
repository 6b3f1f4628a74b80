import Comfy
import Foundation
import Logging

/// `FCGIApp keys create NAME [--max-running N] [--max-queued N] [--rate N/min]`, `keys list`,
/// `keys revoke NAME [--cancel]`, `keys webhook-secret NAME`: API keys in `STATE_DIR/jobs.sqlite`, also
/// while the gateway runs (it sees a new or revoked key within a second). `create` prints the
/// secret once, on its last line; `webhook-secret` prints the key's webhook secret.
public enum KeysCommand {
    public static let usage = "usage: FCGIApp keys create NAME [--max-running N] [--max-queued N] [--rate N/min] | keys list | keys revoke NAME [--cancel] | keys webhook-secret NAME"

    /// Runs the command; returns the exit status.
    public static func run(_ arguments: [String], configuration: GatewayConfiguration) async -> Int32 {
        let store: any JobStore
        do {
            store = try await GatewayApplication.openJobStore(configuration.jobs, logger: Logger(label: "comfy-gateway-keys"))
        } catch {
            fail("\(error)")
            return 2
        }
        do {
            let status = try await execute(arguments, store: store, jobs: configuration.jobs)
            await store.close()
            return status
        } catch {
            fail("\(error)")
            await store.close()
            return 1
        }
    }

    static func execute(_ arguments: [String], store: any JobStore, jobs: JobConfiguration) async throws -> Int32 {
        switch arguments.first {
        case "create":
            guard arguments.count >= 2, APIKey.isValidName(arguments[1]) else {
                fail("keys create NAME: a name is 1 to 64 letters, digits, '-', '_' or '.'\n\(usage)")
                return 64
            }
            var key = APIKey(name: arguments[1])
            var options = arguments.dropFirst(2).makeIterator()
            while let option = options.next() {
                guard let value = options.next() else {
                    fail("\(option) needs a value\n\(usage)")
                    return 64
                }
                switch option {
                case "--max-running": key.maxRunning = Int(value)
                case "--max-queued": key.maxQueued = Int(value)
                case "--rate":
                    key.ratePerMinute = Int(value.hasSuffix("/min") ? String(value.dropLast(4)) : value)
                default:
                    fail("unknown option \(option)\n\(usage)")
                    return 64
                }
                guard [key.maxRunning, key.maxQueued, key.ratePerMinute].allSatisfy({ $0 == nil || $0! > 0 }),
                    option != "--max-running" || key.maxRunning != nil, option != "--max-queued" || key.maxQueued != nil,
                    option != "--rate" || key.ratePerMinute != nil
                else {
                    fail("\(option) takes a positive whole number, got \(value)")
                    return 64
                }
            }
            let secret = APIKey.newSecret()
            try await store.createKey(key, hash: APIKey.hash(of: secret))
            print("created key \(key.name): \(describeLimits(key)). The secret is shown once, below; the gateway keeps only its hash.")
            print(secret)
            return 0
        case "list":
            for key in try await store.keys() {
                let state = key.revokedAt.map { "revoked \(UTCTimestamp($0).iso8601)" } ?? "active"
                print("\(key.name)\t\(state)\tcreated \(UTCTimestamp(key.createdAt).iso8601)\t\(describeLimits(key))")
            }
            return 0
        case "revoke":
            guard arguments.count == 2 || (arguments.count == 3 && arguments[2] == "--cancel") else {
                fail(usage)
                return 64
            }
            let cancel = arguments.count == 3
            if try await store.revokeKey(named: arguments[1], at: Date()) {
                print("revoked key \(arguments[1]); the gateway refuses it within a second")
            } else if cancel, try await store.keys().contains(where: { $0.name == arguments[1] }) {
                // Revoked before: its jobs may still be cancelled.
                print("key \(arguments[1]) was revoked already")
            } else {
                fail("no active key named \(arguments[1])")
                return 1
            }
            if cancel {
                // No job of the key is stored after the revocation (the insert checks it); one
                // whose insert began just before may commit a moment after (PostgreSQL).
                try await Task.sleep(for: .seconds(1))
                let cancelled = try await cancelUnfinishedJobs(ofKey: arguments[1], store: store)
                print("cancelled \(cancelled) of its queued and running jobs")
            }
            return 0
        case "webhook-secret":
            guard arguments.count == 2 else {
                fail(usage)
                return 64
            }
            // Read only here: revoking a key must not depend on the webhook root.
            guard let webhooks = try jobs.webhookKeyring(store: store) else {
                fail("this gateway sends no webhooks: WEBHOOK_SECRET is not set")
                return 1
            }
            guard try await store.keys().contains(where: { $0.name == arguments[1] }) else {
                fail("no key named \(arguments[1])")
                return 1
            }
            print(webhooks.signer(forKey: arguments[1]).secret)
            return 0
        default:
            fail(usage)
            return 64
        }
    }

    /// Ends the key's queued and running jobs as cancelled: revoking stops new ones, and without
    /// this a key revoked for abuse would still have its accepted queue run, up to
    /// `MAX_WAITING_JOBS` of them. Each ends as the gateway ends a cancelled job (its webhook
    /// fires). A gateway instance finds it ended before it sends the prompt; one sharing the
    /// store through PostgreSQL hears of it and takes a running prompt off its backend.
    static func cancelUnfinishedJobs(ofKey name: String, store: any JobStore) async throws -> Int {
        let failure = JobFailure(
            status: 401, body: .object(["error": .object(["code": "unauthorized", "message": "the job's API key was revoked, and its unfinished jobs cancelled"])])
        )
        var cancelled = 0
        for job in try await store.unfinished() where job.keyName == name {
            if try await store.finish(job.id, status: .cancelled, result: nil, failure: failure, at: Date()) != nil { cancelled += 1 }
        }
        return cancelled
    }

    static func describeLimits(_ key: APIKey) -> String {
        let limits = [
            key.maxRunning.map { "max running \($0)" }, key.maxQueued.map { "max queued \($0)" }, key.ratePerMinute.map { "\($0)/min" },
        ].compactMap { $0 }
        return limits.isEmpty ? "no limits" : limits.joined(separator: ", ")
    }

    private static func fail(_ message: String) {
        FileHandle.standardError.write(Data("\(message)\n".utf8))
    }
}
