/// Which waiting job runs next, and where: the scheduler's rules as a state machine with no
/// I/O and no clock, so that a table of events and expected assignments tests it whole.
///
/// Rules: a backend takes jobs only while `up` and below its capacity, and only jobs whose
/// models it has; a job goes to the least-loaded such backend (ties: one that last ran the
/// job's checkpoint, which it has loaded, then the one that started fewer jobs, so equal
/// backends share evenly), preferring one it has not failed on; interactive jobs go first (at
/// most `interactiveBurst` in a row while batch jobs wait) unless configured to take turns with
/// batch jobs; within a priority, owners take turns; a job that failed on
/// its backend goes back first in line until it has used its attempts.
struct JobScheduler: Sendable {
    struct Backend: Sendable, Equatable {
        var health: BackendHealth = .down
        var running: Set<UInt64> = []
        var started = 0
        /// The checkpoint of the job it was last given.
        var lastCheckpoint: String?
    }

    struct Job: Sendable {
        var owner: String
        var priority: JobPriority
        /// The owner's prompts on the backends at once (an API key's `--max-running`); `nil`: no cap.
        var ownerMaxRunning: Int? = nil
        /// The backends that have its models; `nil`: any.
        var eligible: Set<Int>? = nil
        var checkpoint: String? = nil
        var attempts = 0
        var failedOn: Set<Int> = []
        var backend: Int?
    }

    struct Assignment: Sendable, Equatable {
        var job: UInt64
        var backend: Int
    }

    enum Admission: Sendable, Equatable {
        case queued
        /// The queue is full: `queued` jobs are waiting.
        case busy(queued: Int)
    }

    let configuration: SchedulerConfiguration
    private(set) var backends: [Backend]
    private var jobs: [UInt64: Job] = [:]
    private var queues: [JobPriority: OwnerQueue] = [.interactive: OwnerQueue(), .batch: OwnerQueue()]
    /// With `interactiveFirst` off: the priority whose turn is next.
    private var nextTurn = JobPriority.interactive
    /// With `interactiveFirst`: interactive jobs started in a row while batch jobs waited.
    private var interactiveRun = 0

    init(backendCount: Int, configuration: SchedulerConfiguration) {
        self.configuration = configuration
        backends = Array(repeating: Backend(), count: backendCount)
    }

    /// Jobs waiting for a backend.
    var queued: Int { queues.values.reduce(0) { $0 + $1.count } }

    /// Takes a new job into the queue, or refuses it when the queue is full.
    mutating func submit(
        _ id: UInt64, owner: String, priority: JobPriority, ownerMaxRunning: Int? = nil, eligible: Set<Int>? = nil, checkpoint: String? = nil
    ) -> Admission {
        // A job that a free backend takes at once does not wait: only the waiting line is bounded.
        let takenAtOnce = queued == 0 && freeBackends() != nil
        guard queued < configuration.maxQueuedJobs || takenAtOnce else { return .busy(queued: queued) }
        // Painters (the drawing API is public by default) fill half the line at most: a few
        // addresses' sessions cannot leave keyed callers no room.
        if priority == .interactive, queues[.interactive]!.count >= (configuration.maxQueuedJobs + 1) / 2, !takenAtOnce {
            return .busy(queued: queued)
        }
        jobs[id] = Job(owner: owner, priority: priority, ownerMaxRunning: ownerMaxRunning, eligible: eligible, checkpoint: checkpoint)
        queues[priority]!.append(id, owner: owner)
        return .queued
    }

    /// A prompt already on `backend`, which an earlier process submitted and this one takes
    /// up: it runs there from now on, whatever the backend's capacity (ComfyUI has it), and
    /// counts against the capacity and its owner's cap until `finish`.
    mutating func occupy(_ id: UInt64, owner: String, on backend: Int) {
        jobs[id] = Job(owner: owner, priority: .batch, attempts: 1, backend: backend)
        backends[backend].running.insert(id)
    }

    /// The jobs not given a backend yet, whether or not their callers wait for it already.
    var waitingJobs: [UInt64] { jobs.compactMap { $0.value.backend == nil ? $0.key : nil } }

    /// The backends a job may run on; `nil`: any.
    func eligibleBackends(of id: UInt64) -> Set<Int>? {
        jobs[id]?.eligible
    }

    mutating func setHealth(_ backend: Int, _ health: BackendHealth) {
        backends[backend].health = health
    }

    /// The job ended (result or final error) or its caller left: it is forgotten.
    mutating func finish(_ id: UInt64) {
        guard let job = jobs.removeValue(forKey: id) else { return }
        if let backend = job.backend {
            backends[backend].running.remove(id)
        } else {
            _ = queues[job.priority]!.remove(id)
        }
    }

    /// The job's backend failed it: back first in line, or forgotten when out of attempts.
    /// Returns whether it was queued again.
    mutating func retry(_ id: UInt64) -> Bool {
        guard var job = jobs[id], let backend = job.backend else { return false }
        backends[backend].running.remove(id)
        job.failedOn.insert(backend)
        job.backend = nil
        guard job.attempts < configuration.maxAttempts else {
            jobs[id] = nil
            return false
        }
        jobs[id] = job
        queues[job.priority]!.prepend(id, owner: job.owner)
        return true
    }

    /// Hands waiting jobs to free backends; returns who goes where.
    mutating func dispatch() -> [Assignment] {
        var assignments: [Assignment] = []
        while let free = freeBackends(), let id = nextJob(placeableOn: free) {
            var job = jobs[id]!
            let backend = candidates(for: job, among: free).min { load(of: $0, for: job) < load(of: $1, for: job) }!
            job.backend = backend
            job.attempts += 1
            jobs[id] = job
            backends[backend].running.insert(id)
            backends[backend].started += 1
            if job.checkpoint != nil { backends[backend].lastCheckpoint = job.checkpoint }
            assignments.append(Assignment(job: id, backend: backend))
        }
        return assignments
    }

    /// Where a job may go now: a free backend it has not failed on; one it failed on only
    /// when every backend that is up has failed it.
    private func candidates(for job: Job, among free: [Int]) -> [Int] {
        Self.candidates(for: job, among: free, backends: backends)
    }

    private static func candidates(for job: Job, among free: [Int], backends: [Backend]) -> [Int] {
        let able = job.eligible.map { eligible in free.filter(eligible.contains) } ?? free
        let untried = backends.indices.contains { backends[$0].health == .up && !job.failedOn.contains($0) && job.eligible?.contains($0) != false }
        return untried ? able.filter { !job.failedOn.contains($0) } : able
    }

    private func load(of backend: Int, for job: Job) -> (Int, Int, Int, Int) {
        let warm = job.checkpoint != nil && backends[backend].lastCheckpoint == job.checkpoint
        return (backends[backend].running.count, warm ? 0 : 1, backends[backend].started, backend)
    }

    private func freeBackends() -> [Int]? {
        let free = backends.indices.filter { backends[$0].health == .up && backends[$0].running.count < configuration.capacityPerBackend }
        return free.isEmpty ? nil : free
    }

    private mutating func nextJob(placeableOn free: [Int]) -> UInt64? {
        let order: [JobPriority]
        if configuration.interactiveFirst {
            order = interactiveRun >= configuration.interactiveBurst ? [.batch, .interactive] : [.interactive, .batch]
        } else {
            order = nextTurn == .interactive ? [.interactive, .batch] : [.batch, .interactive]
        }
        let (jobs, backends) = (jobs, backends)
        // Owners at their cap of running prompts wait, without holding up anybody else.
        var running: [String: Int] = [:]
        for backend in backends {
            for id in backend.running { if let owner = jobs[id]?.owner { running[owner, default: 0] += 1 } }
        }
        for priority in order {
            var queue = queues[priority]!
            let next = queue.popFirst { id in
                let job = jobs[id]!
                if let cap = job.ownerMaxRunning, running[job.owner, default: 0] >= cap { return false }
                return !Self.candidates(for: job, among: free, backends: backends).isEmpty
            }
            queues[priority] = queue
            if let next {
                nextTurn = priority == .interactive ? .batch : .interactive
                interactiveRun = priority == .interactive && queues[.batch]!.count > 0 ? interactiveRun + 1 : 0
                return next
            }
        }
        return nil
    }
}
