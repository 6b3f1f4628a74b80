import Comfy
import Logging

/// Where generated images go and how long local copies stay.
///
/// Variables: `STORAGE` (`local`, `oss` or `s3`; default `local`, or `oss` when `ENABLE_OSS=true`),
/// `ENABLE_OSS`; for OSS `OSS_ACCESS_KEY_ID`, `OSS_ACCESS_KEY_SECRET`, `OSS_ENDPOINT`,
/// `OSS_BUCKET_NAME` (all four required) and `OSS_BASE_PATH`; for S3 `S3_BUCKET`,
/// `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` (required), `S3_REGION` (`us-east-1`),
/// `S3_ENDPOINT` (`https://s3.<region>.amazonaws.com`), `S3_PREFIX`, `S3_FORCE_PATH_STYLE`
/// (false), `S3_PUBLIC_BASE_URL`; and `OUTPUT_RETENTION` (none: images are kept forever).
///
/// An incomplete OSS configuration falls back to local storage, as the original generate API did, and
/// start-up logs which variable is missing; an incomplete S3 configuration stops start-up.
struct StorageConfiguration {
    /// The store behind `ImageStore`.
    enum Backend {
        case local
        case oss(OSSImageStore.Configuration)
        case s3(S3ImageStore.Configuration)
    }

    var backend: Backend
    /// How long local images are kept (`OUTPUT_RETENTION`); `nil` keeps them forever.
    var retention: Duration?
    /// When OSS was asked for but is not configured: the first missing variable.
    var ossFallbackVariable: String?

    static let ossVariables = ["OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_ENDPOINT", "OSS_BUCKET_NAME"]

    init(_ environment: Environment) throws {
        retention = environment["OUTPUT_RETENTION"] == nil ? nil : try environment.duration("OUTPUT_RETENTION", default: .seconds(0))
        let enableOSS = try environment.boolean("ENABLE_OSS", default: false)
        let kind = environment["STORAGE"]?.lowercased() ?? (enableOSS ? "oss" : "local")
        switch kind {
        case "local":
            backend = .local
        case "oss":
            if let missing = Self.ossVariables.first(where: { environment[$0] == nil }) {
                backend = .local
                ossFallbackVariable = missing
                return
            }
            let endpoint = environment["OSS_ENDPOINT"]!
            guard OSSImageStore.isValidEndpoint(endpoint) else {
                throw ConfigurationError(variable: "OSS_ENDPOINT", problem: "expected host[:port] or http(s)://host[:port], got \"\(endpoint)\"")
            }
            backend = .oss(OSSImageStore.Configuration(
                endpoint: endpoint,
                bucket: environment["OSS_BUCKET_NAME"]!,
                basePath: environment["OSS_BASE_PATH"] ?? "",
                accessKeyID: environment["OSS_ACCESS_KEY_ID"]!,
                accessKeySecret: environment["OSS_ACCESS_KEY_SECRET"]!
            ))
        case "s3":
            for variable in ["S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"] where environment[variable] == nil {
                throw ConfigurationError(variable: variable, problem: "required when STORAGE=s3")
            }
            let region = environment["S3_REGION"] ?? "us-east-1"
            let endpoint = environment["S3_ENDPOINT"] ?? "https://s3.\(region).amazonaws.com"
            guard S3ImageStore.isValidEndpoint(endpoint) else {
                throw ConfigurationError(variable: "S3_ENDPOINT", problem: "expected an http(s)://host[:port] URL, got \"\(endpoint)\"")
            }
            let publicBaseURL = environment["S3_PUBLIC_BASE_URL"]
            if let publicBaseURL, !(publicBaseURL.hasPrefix("http://") || publicBaseURL.hasPrefix("https://")) {
                throw ConfigurationError(variable: "S3_PUBLIC_BASE_URL", problem: "expected an http:// or https:// URL, got \"\(publicBaseURL)\"")
            }
            backend = .s3(S3ImageStore.Configuration(
                endpoint: endpoint,
                region: region,
                bucket: environment["S3_BUCKET"]!,
                prefix: environment["S3_PREFIX"] ?? "",
                accessKeyID: environment["S3_ACCESS_KEY_ID"]!,
                secretAccessKey: environment["S3_SECRET_ACCESS_KEY"]!,
                forcePathStyle: try environment.boolean("S3_FORCE_PATH_STYLE", default: false),
                publicBaseURL: publicBaseURL
            ))
        default:
            throw ConfigurationError(variable: "STORAGE", problem: "expected local, oss or s3, got \"\(kind)\"")
        }
    }

    /// The image store, writing locally first; logs the choice (never a secret).
    func makeStore(local: LocalImageStore, http: CurlHTTPClient, logger: Logger) throws -> any ImageStore {
        if let missing = ossFallbackVariable {
            logger.warning("OSS is enabled but not configured: storing images locally", metadata: ["config.missing": "\(missing)"])
        }
        switch backend {
        case .local:
            logger.info("image storage", metadata: ["storage.store": "local", "storage.directory": "\(local.directory)"])
            return local
        case .oss(let oss):
            logger.info("image storage", metadata: ["storage.store": "oss", "storage.endpoint": "\(oss.endpoint)", "storage.bucket": "\(oss.bucket)"])
            return try OSSImageStore(configuration: oss, local: local, http: http, logger: logger)
        case .s3(let s3):
            logger.info("image storage", metadata: ["storage.store": "s3", "storage.endpoint": "\(s3.endpoint)", "storage.bucket": "\(s3.bucket)"])
            return try S3ImageStore(configuration: s3, local: local, http: http, logger: logger)
        }
    }

    /// The retention sweeps of `directory`; idle until shutdown when `OUTPUT_RETENTION` is unset.
    /// `referenced`: file names still in use (drawing sessions' latest results), kept whatever their age.
    func retentionService(directory: String, logger: Logger, referenced: @escaping @Sendable () async throws -> Set<String>) -> RetentionService {
        RetentionService(sweeper: retention.map { RetentionSweeper(directory: directory, retention: $0) }, logger: logger, referenced: referenced)
    }
}
