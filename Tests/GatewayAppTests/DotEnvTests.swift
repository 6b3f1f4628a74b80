@testable import GatewayApp
import Testing

/// `.env` files as python-dotenv and docker compose read them, the original generate API's `.env.example` included.
struct DotEnvTests {
    @Test func theGenerateAPIsExampleReadsAsItsAuthorMeantIt() throws {
        let text = """
        # ComfyUI服务器配置
        COMFYUI_SERVER=your_comfyui_server_address

        # 服务器配置
        ENABLE_OSS=true  # 设置为false禁用阿里云OSS，使用本地HTTP服务器
        SERVER_BASE_URL=http://example.com  # 服务器基础URL，用于生成本地图片URL

        # 阿里云OSS配置
        OSS_ACCESS_KEY_ID=your_access_key_id
        OSS_BASE_PATH=comfy_images/
        """
        let values = try DotEnv.parse(text)
        #expect(values == [
            "COMFYUI_SERVER": "your_comfyui_server_address",
            "ENABLE_OSS": "true",
            "SERVER_BASE_URL": "http://example.com",
            "OSS_ACCESS_KEY_ID": "your_access_key_id",
            "OSS_BASE_PATH": "comfy_images/",
        ])
    }

    @Test(arguments: [
        ("A=1", "1"),
        ("export A=1", "1"),
        ("  A = spaced value  ", "spaced value"),
        ("A=600 # ten minutes", "600"),
        ("A=http://x/#fragment", "http://x/#fragment"),
        ("A='single # not a comment'", "single # not a comment"),
        ("A='no ${B} expansion'", "no ${B} expansion"),
        (#"A="double \"quoted\" \n line" # comment"#, "double \"quoted\" \n line"),
        ("A=\"two\nlines\"", "two\nlines"),
        ("B=inner\nA=${B}-x", "inner-x"),
        ("A=${HOME_FROM_ENV}", "/home/me"),
        ("A=", ""),
        ("A=crlf\r\n", "crlf"),
    ])
    func syntax(_ pair: (String, String)) throws {
        let values = try DotEnv.parse(pair.0, environment: ["HOME_FROM_ENV": "/home/me"])
        #expect(values["A"] == pair.1, "\(pair.0)")
    }

    @Test func malformedLinesNameTheirLine() {
        #expect(throws: DotEnv.SyntaxError(line: 2, problem: "a \" quote is not closed")) { try DotEnv.parse("A=1\nB=\"open\nC=3") }
        #expect(throws: DotEnv.SyntaxError(line: 3, problem: "expected = after JUSTANAME")) { try DotEnv.parse("A=1\n\nJUSTANAME\n") }
        #expect(throws: DotEnv.SyntaxError(line: 1, problem: "unexpected text after the closing quote")) { try DotEnv.parse("A='x' y") }
    }

    @Test func environmentWinsOverTheFileAndBlankMeansUnset() throws {
        let environment = Environment(["PORT": "9000", "EMPTY": "  "])
        #expect(environment["PORT"] == "9000")
        #expect(environment["EMPTY"] == nil)
    }
}
