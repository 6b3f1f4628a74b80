import CCurl
import Foundation

/// One libcurl easy handle, reused for every request its worker thread performs so that
/// connections to a backend stay alive between calls.
///
/// Used by exactly one thread at a time (checked out of `CurlHTTPClient`'s idle handles for one
/// exchange on an `NIOThreadPool` thread), hence `@unchecked Sendable`.
final class CurlEasyHandle: @unchecked Sendable {
    private let handle: UnsafeMutableRawPointer
    private let maxResponseBytes: Int

    /// curl_global_init is not thread-safe: run it once, before any handle exists.
    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    init(maxResponseBytes: Int) {
        Self.globalInit
        guard let handle = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        self.handle = handle
        self.maxResponseBytes = maxResponseBytes
    }

    deinit { curl_easy_cleanup(handle) }

    /// Runs the exchange on the calling thread; `isCancelled` is polled by libcurl's progress callback.
    func perform(_ request: CurlRequest, isCancelled: @escaping @Sendable () -> Bool) -> Result<CurlResponse, CurlError> {
        curl_easy_reset(handle)
        let limit = min(maxResponseBytes, request.maxResponseBytes ?? .max)
        let sink = CurlResponseSink(limit: limit, isCancelled: isCancelled)
        let context = Unmanaged.passUnretained(sink).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        // curl adds "Expect: 100-continue" to large POSTs; ComfyUI (aiohttp) and nginx don't need the extra round trip.
        for (name, value) in request.headers + [("Expect", "")] {
            headerList = curl_slist_append(headerList, "\(name): \(value)")
        }
        defer { curl_slist_free_all(headerList) }
        var resolveList: UnsafeMutablePointer<curl_slist>? = nil
        for entry in request.resolve { resolveList = curl_slist_append(resolveList, entry) }
        defer { curl_slist_free_all(resolveList) }
        if resolveList != nil { ccurl_setopt_slist(handle, CURLOPT_RESOLVE, resolveList) }
        // A proxy from the environment would resolve the name again: the checked address would not be the one reached.
        if request.direct { ccurl_setopt_string(handle, CURLOPT_PROXY, "") }
        if let minimum = request.minimumSpeed {
            ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, minimum.bytesPerSecond)
            ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, max(1, Int(minimum.over.components.seconds)))
        }

        ccurl_setopt_string(handle, CURLOPT_URL, request.url)
        ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, Int(request.timeout.components.seconds * 1000 + request.timeout.components.attoseconds / 1_000_000_000_000_000))
        ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, 5_000)
        ccurl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        ccurl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList)
        ccurl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
        ccurl_setopt_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            let sink = Unmanaged<CurlResponseSink>.fromOpaque(context!).takeUnretainedValue()
            return sink.appendBody(UnsafeRawBufferPointer(start: data, count: size * count)) ? size * count : 0
        }
        ccurl_setopt_pointer(handle, CURLOPT_HEADERDATA, context)
        ccurl_setopt_callback(handle, CURLOPT_HEADERFUNCTION) { data, size, count, context in
            let sink = Unmanaged<CurlResponseSink>.fromOpaque(context!).takeUnretainedValue()
            sink.appendHeaderLine(UnsafeRawBufferPointer(start: data, count: size * count))
            return size * count
        }
        ccurl_setopt_long(handle, CURLOPT_NOPROGRESS, 0)
        ccurl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context)
        ccurl_setopt_xferinfo(handle) { context, _, _, _, _ in
            Unmanaged<CurlResponseSink>.fromOpaque(context!).takeUnretainedValue().isCancelled() ? 1 : 0
        }

        let code: CURLcode = {
            switch request.method {
            case "GET":
                ccurl_setopt_long(handle, CURLOPT_HTTPGET, 1)
            case "HEAD":
                ccurl_setopt_long(handle, CURLOPT_NOBODY, 1)
            default:
                ccurl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, request.method)
            }
            guard let body = request.body else { return curl_easy_perform(handle) }
            return body.withUnsafeBytes { bytes in
                ccurl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(bytes.count))
                ccurl_setopt_pointer(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!))
                return curl_easy_perform(handle)
            }
        }()

        guard code == CURLE_OK else {
            let message = String(cString: curl_easy_strerror(code))
            switch code {
            case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_GOT_NOTHING, CURLE_SEND_ERROR, CURLE_RECV_ERROR:
                return .failure(CurlError(kind: .connectionFailed, message: message))
            case CURLE_OPERATION_TIMEDOUT:
                return .failure(CurlError(kind: .timedOut, message: message))
            case CURLE_ABORTED_BY_CALLBACK:
                return .failure(CurlError(kind: .cancelled, message: "request cancelled"))
            case CURLE_WRITE_ERROR where sink.overflowed:
                return .failure(CurlError(kind: .responseTooLarge, message: "response larger than \(limit) bytes"))
            default:
                return .failure(CurlError(kind: .other, message: message))
            }
        }
        var status = 0
        ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return .success(CurlResponse(status: status, headers: sink.headers, body: sink.body))
    }
}

/// Collects what libcurl's callbacks hand over during one `perform`.
final class CurlResponseSink {
    var body: [UInt8] = []
    var headers: [(String, String)] = []
    var overflowed = false
    let limit: Int
    let isCancelled: @Sendable () -> Bool

    init(limit: Int, isCancelled: @escaping @Sendable () -> Bool) {
        self.limit = limit
        self.isCancelled = isCancelled
    }

    func appendBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard body.count + bytes.count <= limit else {
            overflowed = true
            return false
        }
        body.append(contentsOf: bytes)
        return true
    }

    /// Read as bytes: Foundation's `trimmingCharacters` here was 2.5% of the app's CPU at 16
    /// concurrent jobs (perf), for a few header lines per call.
    func appendHeaderLine(_ bytes: UnsafeRawBufferPointer) {
        func isSpace(_ byte: UInt8) -> Bool { byte == 32 || byte == 9 || byte == 13 || byte == 10 }
        var start = bytes.startIndex
        var end = bytes.endIndex
        while start < end, isSpace(bytes[start]) { start += 1 }
        while end > start, isSpace(bytes[end - 1]) { end -= 1 }
        let line = bytes[start..<end]
        if line.starts(with: "HTTP/".utf8) {
            headers.removeAll()  // a new response (after a 100 Continue or a redirect) starts
        } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            var value = colon + 1
            while value < end, isSpace(bytes[value]) { value += 1 }
            headers.append((String(decoding: bytes[start..<colon], as: UTF8.self), String(decoding: bytes[value..<end], as: UTF8.self)))
        }
    }
}
