import Comfy
import Foundation
import Testing

/// What nginx serves around the API: health, docs, errors, images, TLS.
@Suite(.serialized)
struct SiteTests {
    @Test func healthReportsEachBackend() async throws {
        try await withGateway("site-health") { gateway, emulator in
            let response = try await gateway.get("/healthz")
            #expect(response.status == 200)
            let health = try JSONValue.parse(response.body)
            #expect(health["status"] == "ok")
            let backend = try #require(health["backends"]?.arrayValue?.first)
            #expect(backend["url"] == .string(emulator.url))
            #expect(backend["state"] == "up")
        }
    }

    @Test func openAPIDocumentAndDocsPageAreServed() async throws {
        try await withGateway("site-docs") { gateway, _ in
            let spec = try await gateway.get("/openapi.json")
            #expect(spec.status == 200)
            #expect(spec.header("Content-Type")?.hasPrefix("application/json") == true)
            let document = try JSONValue.parse(spec.body)
            #expect(document["openapi"]?.stringValue?.hasPrefix("3.1") == true)
            for path in ["/api/generate", "/api/generate_file", "/healthz", "/api/sketch", "/api/styles"] {
                #expect(document["paths"]?[path] != nil, "\(path) is documented")
            }
            let docs = try await gateway.get("/docs")
            #expect(docs.status == 200)
            #expect(docs.header("Content-Type")?.hasPrefix("text/html") == true)
            #expect(docs.bodyText.contains("openapi.json"))
        }
    }

    @Test func unknownPathsAndMethodsAnswerJSONErrors() async throws {
        try await withGateway("site-errors") { gateway, _ in
            let missing = try await gateway.get("/api/nothing-here")
            #expect(missing.status == 404)
            #expect(try JSONValue.parse(missing.body)["error"]?["code"] == "not_found")

            let wrongMethod = try await gateway.get("/api/generate")
            #expect(wrongMethod.status == 405)
            #expect(wrongMethod.header("Allow") == "POST")
            #expect(try JSONValue.parse(wrongMethod.body)["error"]?["code"] == "method_not_allowed")

            let outside = try await gateway.get("/etc/passwd")
            #expect(outside.status == 404)
            #expect(try JSONValue.parse(outside.body)["error"]?["code"] == "not_found")
        }
    }

    @Test func imageFolderIsNeverListedAndOnlyFinishedImagesAreServed() async throws {
        try await withGateway("site-images") { gateway, _ in
            try Data("partial".utf8).write(to: URL(fileURLWithPath: "\(gateway.outputDirectory)/.tmp-1234"))
            try Data("x".utf8).write(to: URL(fileURLWithPath: "\(gateway.outputDirectory)/notes.txt"))
            for path in ["/output_images/", "/output_images/.tmp-1234", "/output_images/notes.txt", "/output_images/../run/fcgi.sock"] {
                let response = try await gateway.get(path)
                #expect(response.status == 404, "\(path)")
                #expect(!response.bodyText.contains("Index of"))
            }
        }
    }

    @Test func storedImagesSupportHeadRangeAndRevalidation() async throws {
        try await withGateway("site-range") { gateway, _ in
            let generated = try await gateway.post("/api/generate", json: Workflows.body(Workflows.txt2img(text: "range")))
            let url = try #require(try JSONValue.parse(generated.body)["url"]?.stringValue)
            let full = try await gateway.get(url)
            let head = try await gateway.get(url, method: "HEAD")
            #expect(head.status == 200)
            #expect(head.header("Content-Length") == "\(full.body.count)")
            let range = try await gateway.get(url, headers: [("Range", "bytes=0-7")])
            #expect(range.status == 206)
            #expect(range.body == Array(full.body.prefix(8)))
            let etag = try #require(full.header("ETag"))
            let revalidated = try await gateway.get(url, headers: [("If-None-Match", etag)])
            #expect(revalidated.status == 304)
        }
    }

    @Test func nginxConfigurationWithTLSPassesNginxTest() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("tls")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let openssl = try ChildProcess(
            "/usr/bin/openssl",
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-keyout", "\(directory)/key.pem", "-out", "\(directory)/cert.pem"],
            logPath: "\(directory)/openssl.log"
        )
        #expect(openssl.stop(0) == 0)
        let render = try ChildProcess(
            TestPaths.gatewayBinary, ["render-nginx"],
            environment: [
                "RUN_DIR": "\(directory)/run", "PORT": "\(TestPaths.freePort())", "OUTPUT_DIR": directory,
                "TLS_CERT": "\(directory)/cert.pem", "TLS_KEY": "\(directory)/key.pem",
                "STATIC_DIR": "\(TestPaths.packageRoot)/static", "NGINX_TEMPLATE_DIR": "\(TestPaths.packageRoot)/nginx",
            ],
            directory: directory,
            logPath: "\(directory)/render.log"
        )
        #expect(render.stop(0) == 0, "\(render.log)")
        let site = try String(contentsOfFile: "\(directory)/run/nginx/conf.d/gateway.conf", encoding: .utf8)
        #expect(site.contains("ssl_certificate \"\(directory)/cert.pem\";"))
    }
}
