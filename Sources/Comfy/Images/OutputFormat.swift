/// The format a caller wants its images in (`output_format`, `quality`).
public struct OutputFormat: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case png, webp, jpeg
    }

    public var kind: Kind
    /// 1–100, for webp and jpeg.
    public var quality: Int

    public static let defaultQuality = 90
    public static let png = OutputFormat(kind: .png, quality: defaultQuality)

    public init(kind: Kind, quality: Int = OutputFormat.defaultQuality) {
        self.kind = kind
        self.quality = quality
    }

    public var mimeType: String {
        switch kind {
        case .png: "image/png"
        case .webp: "image/webp"
        case .jpeg: "image/jpeg"
        }
    }

    /// `webp:85`: how the job store keeps it.
    public var stored: String { "\(kind.rawValue):\(quality)" }

    public init?(stored: String) {
        let parts = stored.split(separator: ":")
        guard parts.count == 2, let kind = Kind(rawValue: String(parts[0])), let quality = Int(parts[1]), (1...100).contains(quality) else { return nil }
        self.init(kind: kind, quality: quality)
    }
}
