import Comfy
import Foundation

/// What every job submission goes through, whichever endpoint takes it: the node policy, the
/// key's rate and quota, and the idempotency key (scoped to the API key, so two keys never
/// share one).
struct JobAdmission: Sendable {
    let gate: APIKeyGate
    let store: any JobStore
    /// Whose async jobs wait in memory to start (`MAX_WAITING_JOBS`).
    let runner: JobRunner
    let policy: NodePolicy
    /// What a caller's own graph may ask of a GPU.
    let limits: WorkflowLimits
    /// Where input images are fetched, checked and kept.
    let inputs: InputImages
    /// Whose model lists say whether a workflow can run anywhere.
    let pool: BackendPool
    /// How long an idempotency key names its job.
    let idempotencyWindow: Duration

    /// The stored job a retry names: its Idempotency-Key within the window, for the same
    /// request. It is answered as it is, before anything a new job goes through (the rate, the
    /// limits, the models, the webhook's host, the input images: a presigned URL may have
    /// expired by the retry); 422 for another request under the key.
    func storedReplay(_ request: GatewayRequest, endpoint: String) async throws -> JobRecord? {
        guard let key = try IdempotencyKey.of(request) else { return nil }
        guard let (job, hash) = try await store.idempotentJob(Self.scoped(key, request), within: idempotencyWindow, at: Date()) else { return nil }
        guard hash == key.requestHash(endpoint: endpoint, body: request.body, contentType: request.header("content-type")) else {
            throw JobStoreError(.idempotencyKeyReused, "this Idempotency-Key was used for another request within 24 h; use a new key for a new request")
        }
        return job
    }

    /// A space is in no key name and no Idempotency-Key (printable ASCII without it), so the
    /// scoped keys of two API keys, or of a key and a caller without one, never meet.
    /// (PostgreSQL refuses text with a NUL byte, the separator once used.)
    static func scoped(_ key: IdempotencyKey, _ request: GatewayRequest) -> String {
        request.apiKey.map { "\($0.name) \(key.value)" } ?? key.value
    }

    /// The new job's record and its request hash; throws the request's refusal. Input images
    /// are fetched only for a caller whose key, rate and workflow passed.
    func admit(_ body: GenerateRequest, _ request: GatewayRequest, kind: JobKind, endpoint: String, webhookURL: String? = nil) async throws -> (JobRecord, String?) {
        try policy.check(body.workflow)
        let given = body.callerInputs.map(Set.init)
        try limits.check(body.workflow) { node, input in given?.contains(WorkflowTool.Target(nodeID: node, input: input)) ?? true }
        if let missing = pool.missingModels(ModelReference.models(in: body.workflow)).first { throw pool.modelNotFound(missing) }
        let idempotency = try IdempotencyKey.of(request)
        let scopedKey = idempotency.map { Self.scoped($0, request) }
        // The limits below refuse early, before any input image is fetched, unless the
        // Idempotency-Key names a stored job: a replay is that job, not a new one.
        func replaysStoredJob() async throws -> Bool {
            guard let scopedKey else { return false }
            return try await store.holdsIdempotencyKey(scopedKey, within: idempotencyWindow, at: Date())
        }
        if let key = request.apiKey {
            try await gate.spend(key)
            // The insert counts again, exactly.
            if let limit = key.maxQueued, try await store.unfinishedJobCount(key: key.name) >= limit, !(try await replaysStoredJob()) {
                throw JobStoreError.unfinishedLimitReached(key: key.name, limit: limit)
            }
        }
        if kind == .async, let waiting = await runner.waitingAtLimit, !(try await replaysStoredJob()) {
            var error = APIError(.busy, "\(waiting) jobs wait to start on this gateway (MAX_WAITING_JOBS); try again later")
            error.headers.append(("Retry-After", "5"))
            throw error
        }
        guard body.inputImages.count <= InputImages.maxPerJob else {
            throw APIError(.payloadTooLarge, "\(body.inputImages.count) input images; at most \(InputImages.maxPerJob) are accepted per job", details: ["parameter": "input_images"])
        }
        var workflow = body.workflow
        // The job is as old as its inputs: retention keeps inputs younger than every unfinished job.
        let admittedAt = Date()
        let names = try await accept(body.inputImages, owner: request.owner)
        for (image, name) in zip(body.inputImages, names) {
            for target in image.targets {
                workflow[target.nodeID] = workflow[target.nodeID]?.settingInput(target.input, .string(name))
            }
        }
        let record = JobRecord(
            id: JobRecord.newID(), kind: kind, workflow: workflow, outputNodeID: body.outputNodeID, owner: request.owner,
            keyName: request.apiKey?.name, webhookURL: webhookURL, idempotencyKey: scopedKey, createdAt: admittedAt, outputFormat: body.outputFormat
        )
        return (record, idempotency?.requestHash(endpoint: endpoint, body: request.body, contentType: request.header("content-type")))
    }

    /// The request's input images, stored; their `LoadImage` values in order. Side by side, a
    /// few at a time, within one `INPUT_URL_TIMEOUT` for all: one after another, 16 slow URLs
    /// would hold the request, and its FastCGI thread, for 16 timeouts.
    private func accept(_ images: [GenerateRequest.InputImage], owner: String) async throws -> [String] {
        guard !images.isEmpty else { return [] }
        let (inputs, deadline) = (self.inputs, ContinuousClock.now + inputs.limits.fetchTimeout)
        return try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var names = [String](repeating: "", count: images.count)
            var next = 0
            func start() {
                let (index, image) = (next, images[next])
                next += 1
                group.addTask {
                    switch image.given {
                    case .text(let value): (index, try await inputs.accept(value, field: image.field, owner: owner, by: deadline))
                    case .bytes(let bytes): (index, try await inputs.accept(bytes: bytes, field: image.field, owner: owner))
                    }
                }
            }
            while next < min(Self.fetchesAtOnce, images.count) { start() }
            while let (index, name) = try await group.next() {
                names[index] = name
                if next < images.count { start() }
            }
            return names
        }
    }

    /// A request's input images fetched at once at most (a caller's share of the 16 outbound connections).
    static let fetchesAtOnce = 4

    /// Whether the caller may see the job: its own key's jobs only (all jobs while keys are off).
    static func mayAccess(_ job: JobRecord, _ request: GatewayRequest) -> Bool {
        guard let key = request.apiKey else { return true }
        return job.keyName == key.name
    }
}
