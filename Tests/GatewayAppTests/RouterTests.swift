import Comfy
import Foundation
@testable import GatewayApp
import Logging
import Prometheus
import Testing

/// The real router over parts whose one backend nobody listens on: everything these tests see
/// is answered before ComfyUI would be asked.
func withRouter(_ environment: [String: String] = [:], _ body: (Router) async throws -> Void) async throws {
    let directory = NSTemporaryDirectory() + "router-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var values = ["COMFYUI_SERVER": "http://127.0.0.1:9", "OUTPUT_DIR": directory, "WORKFLOW_DIR": directory, "STATE_DIR": directory]
    values.merge(environment) { $1 }
    let configuration = try GatewayConfiguration(Environment(values))
    let http = CurlHTTPClient(threads: 2)
    let store = try await SQLiteJobStore.open(path: "\(directory)/jobs.sqlite", logger: Logger(label: "test"))
    let parts = try GatewayParts(
        configuration: configuration, http: http, jobStore: store, metrics: PrometheusCollectorRegistry(), logger: Logger(label: "test")
    )
    try await body(parts.router(configuration))
    await store.close()
    try await http.shutdown()
}

func post(_ path: String, _ body: String, contentType: String? = "application/json", headers: [String: String] = [:]) -> GatewayRequest {
    var all = headers
    all["content-type"] = contentType
    return GatewayRequest(method: "POST", path: path, headers: all, body: Array(body.utf8), host: "127.0.0.1:8000")
}

extension GatewayResponse {
    var error: JSONValue? { (try? JSONValue.parse(body))?["error"] }
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

/// Routing, content types, CORS and workflow refusals, called in-process.
struct RouterTests {
    @Test func unknownPathsAndMethodsAnswerJSON() async throws {
        try await withRouter { router in
            let missing = await router.respond(to: GatewayRequest(method: "GET", path: "/api/nothing"))
            #expect(missing.status == 404)
            #expect(missing.error?["code"] == "not_found")
            let wrong = await router.respond(to: GatewayRequest(method: "GET", path: "/api/generate"))
            #expect(wrong.status == 405)
            #expect(wrong.header("Allow") == "POST")
            #expect(wrong.error?["code"] == "method_not_allowed")
        }
    }

    @Test(arguments: [nil, "text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x"])
    func jobRoutesRefuseBodiesThatAreNeitherJSONNorForms(_ contentType: String?) async throws {
        try await withRouter { router in
            let isForm = contentType?.hasPrefix("multipart/") == true
            for path in ["/api/generate", "/api/generate_file"] {
                let response = await router.respond(to: post(path, #"{"workflow_data": {}}"#, contentType: contentType))
                // JSON in a form's clothes is a broken form (400); the other types are not taken (415).
                #expect(response.status == (isForm ? 400 : 415))
                #expect(response.error?["code"] == (isForm ? "invalid_request" : "unsupported_media_type"))
            }
            let sketch = await router.respond(to: post("/api/sketch", "{}", contentType: contentType == nil ? "application/json" : contentType))
            #expect(sketch.status == (contentType?.hasPrefix("multipart/") == true ? 400 : 415))
        }
    }

    @Test func refusedWorkflowsNameTheNodeAndInput() async throws {
        try await withRouter { router in
            let body = #"{"workflow_data": {"10": {"class_type": "LoadImage", "inputs": {"image": "/etc/passwd"}}, "12": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["10", 0]}}}, "output_node_id": "12"}"#
            let response = await router.respond(to: post("/api/generate", body))
            #expect(response.status == 400)
            #expect(response.error?["code"] == "workflow_refused")
            #expect(response.error?["node_id"] == "10")
            #expect(response.error?["input"] == "image")
            #expect(response.error?["class_type"] == "LoadImage")
            let invalid = await router.respond(to: post("/api/generate", "{nope"))
            #expect(invalid.status == 400)
            #expect(invalid.error?["code"] == "invalid_json")
        }
    }

    @Test func crossSitePostsNeedAListedOrigin() async throws {
        try await withRouter(["CORS_ALLOW_ORIGINS": "https://app.example"]) { router in
            let foreign = await router.respond(to: post("/api/generate", "{nope", headers: ["origin": "https://evil.example"]))
            #expect(foreign.status == 403)
            #expect(foreign.error?["code"] == "forbidden")
            // The page's own origin and a listed one get past the Origin check to the body's own error.
            let own = await router.respond(to: post("/api/generate", "{nope", headers: ["origin": "http://127.0.0.1:8000"]))
            #expect(own.error?["code"] == "invalid_json")
            #expect(own.header("Access-Control-Allow-Origin") == nil)
            let listed = await router.respond(to: post("/api/generate", "{nope", headers: ["origin": "https://app.example"]))
            #expect(listed.error?["code"] == "invalid_json")
            #expect(listed.header("Access-Control-Allow-Origin") == "https://app.example")
        }
    }

    @Test func aCrossSiteFormWithoutOriginIsRefusedByItsFetchMetadata() async throws {
        try await withRouter { router in
            let form = "--x\r\nContent-Disposition: form-data; name=\"workflow_data\"\r\n\r\n{}\r\n--x--\r\n"
            for site in ["cross-site", "same-site"] {
                let response = await router.respond(to: post("/api/generate", form, contentType: "multipart/form-data; boundary=x", headers: ["sec-fetch-site": site]))
                #expect(response.status == 403, "\(site)")
            }
            // Same origin, a direct navigation, and clients that send no fetch metadata pass to the body's own check.
            for site in ["same-origin", "none", nil] {
                let headers = site.map { ["sec-fetch-site": $0] } ?? [:]
                let response = await router.respond(to: post("/api/generate", "{nope", headers: headers))
                #expect(response.error?["code"] == "invalid_json", "\(site ?? "no header")")
            }
        }
    }

    @Test func requestsToANameThatIsNotConfiguredAreRefusedWith421() async throws {
        // A page whose name DNS now points here (rebinding) reads same-origin GETs, which carry no Origin.
        try await withRouter { router in
            for path in ["/api/workflows", "/api/jobs/0123456789abcdef", "/api/result/s", "/metrics"] {
                let response = await router.respond(to: GatewayRequest(method: "GET", path: path, host: "evil.example:8000"))
                #expect(response.status == 421, "\(path)")
                #expect(response.error?["code"] == "unknown_host")
                #expect(response.error?["message"]?.stringValue?.contains("\"evil.example\"") == true)
                #expect(response.error?["message"]?.stringValue?.contains("ALLOWED_HOSTS") == true)
            }
            for host in ["127.0.0.1:8000", "localhost:8000", "[::1]:8000"] {
                #expect(await router.respond(to: GatewayRequest(method: "GET", path: "/api/workflows", host: host)).status == 200, "\(host)")
            }
            // A load balancer's health check by any name gets the status, not the operator's details.
            let health = await router.respond(to: GatewayRequest(method: "GET", path: "/healthz", host: "gw.internal", isOperator: true))
            #expect(health.status != 421)
            #expect((try? JSONValue.parse(health.body))?["backends"] == nil, "\(String(decoding: health.body, as: UTF8.self))")
            let detailed = await router.respond(to: GatewayRequest(method: "GET", path: "/healthz", host: "127.0.0.1:8000", isOperator: true))
            #expect((try? JSONValue.parse(detailed.body))?["backends"] != nil)
        }
        try await withRouter(["SERVER_BASE_URL": "https://img.example.com", "ALLOWED_HOSTS": "gateway"]) { router in
            for host in ["img.example.com", "gateway:8000"] {
                #expect(await router.respond(to: GatewayRequest(method: "GET", path: "/api/workflows", host: host)).status == 200, "\(host)")
            }
            #expect(await router.respond(to: GatewayRequest(method: "GET", path: "/api/workflows", host: "evil.example")).status == 421)
        }
    }

    /// With METRICS_TOKEN, an address in METRICS_ALLOW is not enough (behind a proxy every
    /// client may share one): metrics and health details need the token too.
    @Test func withAMetricsTokenOperatorsAreThoseWhoSendIt() async throws {
        let token = "0123456789abcdef-operators"
        try await withRouter(["METRICS_TOKEN": token]) { router in
            func ask(_ path: String, authorization: String?) async -> GatewayResponse {
                await router.respond(to: GatewayRequest(
                    method: "GET", path: path, headers: authorization.map { ["authorization": $0] } ?? [:], host: "127.0.0.1:8000", isOperator: true
                ))
            }
            for authorization in [nil, "Bearer wrong", "Bearer \(token)x", "Basic \(token)", "Bearer \(token.dropLast())"] {
                let metrics = await ask("/metrics", authorization: authorization)
                #expect(metrics.status == 401, "\(authorization ?? "none")")
                #expect(metrics.error?["code"] == "unauthorized")
                #expect(metrics.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
                let health = await ask("/healthz", authorization: authorization)
                #expect((try? JSONValue.parse(health.body)) == .object(["status": "unavailable"]), "\(String(decoding: health.body, as: UTF8.self))")
            }
            for authorization in ["Bearer \(token)", "bearer \(token)"] {
                #expect(await ask("/metrics", authorization: authorization).status == 200)
                #expect((try? JSONValue.parse(await ask("/healthz", authorization: authorization).body))?["backends"] != nil)
            }
            // The token does not make an address outside METRICS_ALLOW an operator.
            let outsider = await router.respond(to: GatewayRequest(
                method: "GET", path: "/metrics", headers: ["authorization": "Bearer \(token)"], host: "127.0.0.1:8000", isOperator: false
            ))
            #expect(outsider.status == 401)
        }
    }

    @Test func theOpenAPIServerURLEchoesOnlyAPlainHost() async throws {
        try await withRouter(["ALLOWED_HOSTS": "*"]) { router in
            for (host, expected) in [
                ("gw.example:8000", "http://gw.example:8000"), ("[::1]:8000", "http://[::1]:8000"), ("comfy_gateway:8000", "http://comfy_gateway:8000"),
                ("evil.example/#", "http://localhost"), ("a\"b", "http://localhost"), ("x:99999999", "http://localhost"),
            ] {
                let response = await router.respond(to: GatewayRequest(method: "GET", path: "/api/workflows/openapi.json", host: host))
                let document = try JSONValue.parse(response.body)
                #expect(document["servers"]?.arrayValue?.first?["url"]?.stringValue == expected, "\(host)")
                #expect(response.header("Vary") == "Host, Authorization", "the document differs by host and by key")
            }
        }
    }

    @Test func everyToolGetsAnOperationIDOfItsOwnWithinSixtyFourCharacters() {
        let long = String(repeating: "a", count: 64)
        let names = ["paint", "foo-bar", "foo_bar", "poster-v2", long]
        let ids = OpenAPIRoute.operationIDs(names)
        #expect(ids["paint"] == "run_paint")
        #expect(ids["poster-v2"] == "run_poster_v2", "alone, a dash becomes an underscore")
        #expect(ids["foo_bar"] == "run_foo_bar", "the name without a dash keeps its id")
        #expect(ids["foo-bar"]?.hasPrefix("run_foo_bar_") == true)
        #expect(Set(ids.values).count == names.count, "\(ids)")
        for id in ids.values { #expect((1...64).contains(id.utf8.count), "\(id)") }
        #expect(OpenAPIRoute.operationIDs(names) == ids, "the same every time")
    }

    @Test func preflightsPassOnlyForListedOriginsAndRoutedMethods() async throws {
        try await withRouter(["CORS_ALLOW_ORIGINS": "https://app.example"]) { router in
            func preflight(_ origin: String, _ method: String) async -> GatewayResponse {
                await router.respond(to: GatewayRequest(method: "OPTIONS", path: "/api/generate", headers: [
                    "origin": origin, "access-control-request-method": method, "access-control-request-headers": "content-type",
                ]))
            }
            let passed = await preflight("https://app.example", "POST")
            #expect(passed.status == 204)
            #expect(passed.header("Access-Control-Allow-Origin") == "https://app.example")
            #expect(passed.header("Access-Control-Allow-Methods") == "OPTIONS, POST")
            #expect(passed.header("Access-Control-Max-Age") == "600")
            #expect(await preflight("https://evil.example", "POST").status == 403)
            #expect(await preflight("https://app.example", "DELETE").status == 405)
            let plain = await router.respond(to: GatewayRequest(method: "OPTIONS", path: "/api/styles"))
            #expect(plain.status == 204)
            #expect(plain.header("Allow") == "GET, HEAD, OPTIONS")
        }
    }

    @Test func webhookURLsAreCheckedBeforeAJobIsStored() async throws {
        let job = { (webhook: String) in #"{"workflow_data": {"1": {"class_type": "EmptyImage", "inputs": {}}}, "webhook_url": "# + webhook + "}" }
        try await withRouter { router in
            let unsigned = await router.respond(to: post("/api/jobs", job(#""https://example.com/hook""#)))
            #expect(unsigned.status == 400)
            #expect(unsigned.error?["message"]?.stringValue?.contains("WEBHOOK_SECRET") == true)
        }
        let secret = "whsec_" + Data("0123456789abcdef0123456789abcdef".utf8).base64EncodedString()
        try await withRouter(["WEBHOOK_SECRET": secret]) { router in
            for webhook in [#""http://127.0.0.1:8188/prompt""#, #""http://169.254.169.254/""#, #""ftp://example.com/""#, "42", #""http://[::1]/""#] {
                let refused = await router.respond(to: post("/api/jobs", job(webhook)))
                #expect(refused.status == 400, "\(webhook)")
                #expect(refused.error?["code"] == "invalid_request", "\(webhook)")
                #expect(refused.error?["field"] == "webhook_url", "\(webhook)")
            }
        }
    }

    @Test func badIdempotencyKeysAreRefused() async throws {
        try await withRouter { router in
            for key in ["has space", "", String(repeating: "k", count: 256), "ünïcode"] {
                let body = #"{"workflow_data": {"1": {"class_type": "EmptyImage", "inputs": {}}}}"#
                let refused = await router.respond(to: post("/api/generate", body, headers: ["idempotency-key": key]))
                #expect(refused.status == 400, "\(key)")
                #expect(refused.error?["message"]?.stringValue?.contains("Idempotency-Key") == true)
            }
        }
    }
}

/// RFC-strict parsing: what is valid is read, what is not is refused with a clear reason.
struct StrictParsingTests {
    @Test func validButHugeNumbersAndDuplicateKeysAreRefusedAsSuchNotAsBadJSON() async throws {
        try await withRouter { router in
            for body in [#"{"workflow_data": {"1": {"class_type": "A", "inputs": {"x": 1e999999}}}}"#,
                         #"{"workflow_data": {"1": {"class_type": "A", "inputs": {"x": "# + String(repeating: "9", count: 5000) + "}}}}"] {
                let answer = await router.respond(to: post("/api/generate", body))
                #expect(answer.status == 400)
                #expect(answer.error?["code"] == "invalid_request")
                #expect(answer.error?["message"]?.stringValue?.contains("out of a 64-bit float's range") == true)
            }
            let duplicate = await router.respond(to: post("/api/generate", #"{"workflow_data": {"1": {"class_type": "A"}, "1": {"class_type": "B"}}}"#))
            #expect(duplicate.status == 400)
            #expect(duplicate.error?["code"] == "invalid_request")
            #expect(duplicate.error?["message"]?.stringValue?.contains("appears twice") == true)
            let broken = await router.respond(to: post("/api/generate", #"{"workflow_data": [1,}"#))
            #expect(broken.error?["code"] == "invalid_json")
            #expect(broken.error?["message"]?.stringValue?.contains("at byte") == true)
            let notUTF8 = await router.respond(to: GatewayRequest(method: "POST", path: "/api/generate", headers: ["content-type": "application/json"], body: [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D], host: "127.0.0.1:8000"))
            #expect(notUTF8.error?["code"] == "invalid_json")
        }
    }

    @Test func multipartMustCloseItsBoundaryAndNameEachFieldOnce() async throws {
        try await withRouter { router in
            func upload(_ body: String, boundary: String = "XyZ") async -> GatewayResponse {
                await router.respond(to: post("/api/sketch", body.replacingOccurrences(of: "\n", with: "\r\n"), contentType: "multipart/form-data; boundary=\(boundary)"))
            }
            let cut = await upload("--XyZ\nContent-Disposition: form-data; name=\"session_id\"\n\nabc\n--XyZ\nContent-Disposition: form-data; name=\"style\"\n\nrealistic\n")
            #expect(cut.status == 400)
            #expect(cut.error?["message"]?.stringValue?.contains("closing boundary") == true)
            let twice = await upload("--XyZ\nContent-Disposition: form-data; name=\"session_id\"\n\nabc\n--XyZ\nContent-Disposition: form-data; name=\"session_id\"\n\nxyz\n--XyZ--\n")
            #expect(twice.status == 400)
            #expect(twice.error?["message"]?.stringValue?.contains("appears twice") == true)
            let long = String(repeating: "b", count: 71)
            let tooLong = await upload("--\(long)\nContent-Disposition: form-data; name=\"a\"\n\nx\n--\(long)--\n", boundary: long)
            #expect(tooLong.status == 400)
            #expect(tooLong.error?["message"]?.stringValue?.contains("71 characters") == true)
        }
    }
}
