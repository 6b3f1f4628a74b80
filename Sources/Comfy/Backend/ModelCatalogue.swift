/// The model files one backend has, by folder, as `GET /models/{folder}` lists them.
public struct ModelCatalogue: Sendable, Equatable {
    public var folders: [String: Set<String>]

    public init(folders: [String: Set<String>]) {
        self.folders = folders
    }

    public func has(_ model: ModelReference) -> Bool {
        folders[model.folder]?.contains(model.name) ?? false
    }

    /// Names sorted per folder, for `/healthz`; empty folders left out.
    public var json: JSONValue {
        .object(folders.filter { !$0.value.isEmpty }.mapValues { .array($0.sorted().map(JSONValue.string)) })
    }
}
