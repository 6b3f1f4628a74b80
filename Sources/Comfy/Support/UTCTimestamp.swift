import Foundation

/// A wall-clock second in UTC, formatted the ways request signatures, HTTP and JSON need.
///
/// Formatting is done by hand from `gmtime_r`, so the output never depends on a locale.
public struct UTCTimestamp: Sendable, Equatable, Comparable {
    /// Seconds since 1970-01-01T00:00:00Z.
    public let epochSeconds: Int64
    private let year: Int
    private let month: Int
    private let day: Int
    private let hour: Int
    private let minute: Int
    private let second: Int
    private let weekday: Int

    /// The whole second at or before `date`.
    public init(_ date: Date) {
        self.init(epochSeconds: Int64(date.timeIntervalSince1970.rounded(.down)))
    }

    public init(epochSeconds: Int64) {
        self.epochSeconds = epochSeconds
        var time = time_t(epochSeconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        year = Int(parts.tm_year) + 1900
        month = Int(parts.tm_mon) + 1
        day = Int(parts.tm_mday)
        hour = Int(parts.tm_hour)
        minute = Int(parts.tm_min)
        second = Int(parts.tm_sec)
        weekday = Int(parts.tm_wday)
    }

    /// The same instant as a `Date`.
    public var date: Date { Date(timeIntervalSince1970: TimeInterval(epochSeconds)) }

    /// `20150830T123600Z`: SigV4's `X-Amz-Date`.
    public var compact: String {
        "\(dateStamp)T\(Self.pad(hour))\(Self.pad(minute))\(Self.pad(second))Z"
    }

    /// `20150830`: the date of a SigV4 credential scope.
    public var dateStamp: String {
        "\(Self.pad(year, 4))\(Self.pad(month))\(Self.pad(day))"
    }

    /// `Sun, 30 Aug 2015 12:36:00 GMT`: HTTP's `Date` (RFC 9110 IMF-fixdate), as OSS signs it.
    public var httpDate: String {
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        return "\(days[weekday]), \(Self.pad(day)) \(months[month - 1]) \(Self.pad(year, 4)) \(Self.pad(hour)):\(Self.pad(minute)):\(Self.pad(second)) GMT"
    }

    /// `2015-08-30T12:36:00Z`: ISO 8601 (RFC 3339) for JSON answers.
    public var iso8601: String {
        "\(Self.pad(year, 4))-\(Self.pad(month))-\(Self.pad(day))T\(Self.pad(hour)):\(Self.pad(minute)):\(Self.pad(second))Z"
    }

    public static func < (lhs: UTCTimestamp, rhs: UTCTimestamp) -> Bool {
        lhs.epochSeconds < rhs.epochSeconds
    }

    private static func pad(_ value: Int, _ width: Int = 2) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
