import Foundation

/// Dedicated threads, each owning one `CurlEasyHandle`, that run submitted exchanges in order.
final class CurlWorkerPool: @unchecked Sendable {
    // `condition` guards `jobs` and `isShuttingDown`; handles are touched only by their own thread.
    private let condition = NSCondition()
    private var jobs: [@Sendable (CurlEasyHandle) -> Void] = []
    private var head = 0
    private var isShuttingDown = false

    init(threads: Int, maxResponseBytes: Int) {
        for index in 0..<max(1, threads) {
            let thread = Thread { [self] in
                let handle = CurlEasyHandle(maxResponseBytes: maxResponseBytes)
                while let job = nextJob() {
                    job(handle)
                }
            }
            thread.name = "curl-\(index)"
            thread.stackSize = 512 << 10
            thread.start()
        }
    }

    func submit(_ job: @escaping @Sendable (CurlEasyHandle) -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    func shutdown() {
        condition.lock()
        isShuttingDown = true
        condition.broadcast()
        condition.unlock()
    }

    private func nextJob() -> (@Sendable (CurlEasyHandle) -> Void)? {
        condition.lock()
        defer { condition.unlock() }
        while head == jobs.count {
            if isShuttingDown { return nil }
            condition.wait()
        }
        let job = jobs[head]
        head += 1
        if head > 1024, head * 2 > jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }
}
