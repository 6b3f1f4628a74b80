import Comfy
import Foundation
import Testing

/// `FCGIApp run` (what `make run` starts) with a `.env` written as the original generate API tells its users to:
/// one reader for the app and nginx, Chinese comments and placeholders included.
@Suite(.serialized)
struct ConfigurationTests {
    /// The original generate API's `.env.example`, verbatim.
    static let originalDotEnv = """
    # ComfyUI服务器配置
    COMFYUI_SERVER=your_comfyui_server_address

    # 服务器配置
    ENABLE_OSS=true  # 设置为false禁用阿里云OSS，使用本地HTTP服务器
    SERVER_BASE_URL=http://example.com  # 服务器基础URL，用于生成本地图片URL

    # 阿里云OSS配置
    OSS_ACCESS_KEY_ID=your_access_key_id
    OSS_ACCESS_KEY_SECRET=your_access_key_secret
    OSS_ENDPOINT=your_endpoint
    OSS_BUCKET_NAME=your_bucket_name
    OSS_BASE_PATH=comfy_images/

    """

    /// Only what a newcomer's shell has: the rest comes from `.env`.
    func environment(_ directory: String) -> [String: String] {
        [
            "PORT": "\(TestPaths.freePort())", "RUN_DIR": "\(directory)/run",
            "STATIC_DIR": "\(TestPaths.packageRoot)/static", "NGINX_TEMPLATE_DIR": "\(TestPaths.packageRoot)/nginx",
        ]
    }

    @Test func originalDotEnvVerbatimStopsWithOneLineNamingThePlaceholder() throws {
        let directory = try TestPaths.makeTemporaryDirectory("dotenv-seed")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.originalDotEnv.write(toFile: "\(directory)/.env", atomically: true, encoding: .utf8)
        let run = try ChildProcess(TestPaths.gatewayBinary, ["run"], environment: environment(directory), directory: directory, logPath: "\(directory)/run.log")
        // EX_CONFIG: systemd's RestartPreventExitStatus=78 does not retry it.
        #expect(run.stop(0, grace: .seconds(30)) == 78)
        let lines = run.log.split(separator: "\n")
        #expect(lines == [#"invalid configuration: COMFYUI_SERVER: "your_comfyui_server_address" is not an http://host:port URL"#], "\(run.log)")
    }

    @Test func originalDotEnvWithARealServerServesWithItsCommentedValues() async throws {
        let directory = try TestPaths.makeTemporaryDirectory("dotenv-run")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let emulator = try Emulator(directory: directory, http: testHTTP)
        defer { emulator.stop() }
        // The newcomer fills in the server, turns OSS off the way
        // the seed's comment says, and comments a timeout.
        let dotEnv = Self.originalDotEnv
            .replacingOccurrences(of: "your_comfyui_server_address", with: "http://127.0.0.1:\(emulator.port)")
            .replacingOccurrences(of: "ENABLE_OSS=true", with: "ENABLE_OSS=false")
            + "GENERATE_TIMEOUT=600 # ten minutes\nexport OUTPUT_DIR='./images'\n"
        try dotEnv.write(toFile: "\(directory)/.env", atomically: true, encoding: .utf8)
        let env = environment(directory)
        let run = try ChildProcess(TestPaths.gatewayBinary, ["run"], environment: env, directory: directory, logPath: "\(directory)/run.log")
        defer { run.stop(SIGTERM, grace: .seconds(30)) }
        let base = "http://127.0.0.1:\(env["PORT"]!)"
        try await waitUntil(timeout: .seconds(30)) {
            guard run.isRunning else { throw TestFailure("FCGIApp run exited:\n\(run.log)") }
            return (try? await testHTTP.execute(CurlRequest(url: "\(base)/healthz", timeout: .seconds(2))))?.status == 200
        }
        let response = try await testHTTP.execute(CurlRequest(
            method: "POST", url: "\(base)/api/generate", headers: [("Content-Type", "application/json")],
            body: Workflows.body(Workflows.txt2img(text: "from .env")).encoded()
        ))
        #expect(response.status == 200, "\(response.bodyText)")
        let url = try #require(try JSONValue.parse(response.body)["url"]?.stringValue)
        // SERVER_BASE_URL without its comment, and the image in OUTPUT_DIR from the quoted export.
        #expect(url.hasPrefix("http://example.com/output_images/"), "\(url)")
        let name = String(url.split(separator: "/").last ?? "")
        #expect(FileManager.default.fileExists(atPath: "\(directory)/images/\(name)"))
        // nginx was rendered from the same parsed timeout: GENERATE_TIMEOUT + 30 s.
        let snippet = try String(contentsOfFile: "\(directory)/run/nginx/snippets/fastcgi-gateway.conf", encoding: .utf8)
        #expect(snippet.contains("fastcgi_read_timeout 630s;"))
        #expect(!run.log.contains("设置为false"))
    }
}
