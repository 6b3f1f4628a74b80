import Comfy

/// ComfyUI API-format workflows the tests send (the seed's txt2img graph, with variations).
enum Workflows {
    /// The original generate API's example: checkpoint → prompts → KSampler → VAEDecode → output node "9".
    static func txt2img(text: String, seed: Int = 42, output: String = "SaveImageWebsocket") -> [String: JSONValue] {
        var workflow: [String: JSONValue] = [
            "3": node("KSampler", [
                "seed": .number(Double(seed)), "steps": 2, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                "model": link("4", 0), "positive": link("6", 0), "negative": link("7", 0), "latent_image": link("5", 0),
            ]),
            "4": node("CheckpointLoaderSimple", ["ckpt_name": "emulator.safetensors"]),
            "5": node("EmptyLatentImage", ["width": 64, "height": 64, "batch_size": 1]),
            "6": node("CLIPTextEncode", ["text": .string(text), "clip": link("4", 1)]),
            "7": node("CLIPTextEncode", ["text": "text, watermark", "clip": link("4", 1)]),
            "8": node("VAEDecode", ["samples": link("3", 0), "vae": link("4", 2)]),
        ]
        workflow["9"] = output == "SaveImageWebsocket"
            ? node(output, ["images": link("8", 0)])
            : node(output, ["images": link("8", 0), "filename_prefix": "gw"])
        return workflow
    }

    static func node(_ classType: String, _ inputs: [String: JSONValue]) -> JSONValue {
        .object(["class_type": .string(classType), "inputs": .object(inputs)])
    }

    static func link(_ node: String, _ slot: Int) -> JSONValue {
        .array([.string(node), .number(Double(slot))])
    }

    static func body(_ workflow: [String: JSONValue], output: JSONValue? = "9", responseType: String? = nil) -> JSONValue {
        var body: [String: JSONValue] = ["workflow_data": .object(workflow)]
        if let output { body["output_node_id"] = output }
        if let responseType { body["response_type"] = .string(responseType) }
        return .object(body)
    }
}


/// The keywords of a PNG's text chunks (tEXt, zTXt, iTXt), in order.
func pngTextKeywords(_ bytes: [UInt8]) -> [String] {
    var keywords: [String] = []
    var offset = 8
    while offset + 12 <= bytes.count {
        let length = bytes[offset..<offset + 4].reduce(0) { ($0 << 8) | Int($1) }
        let type = String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self)
        guard offset + 12 + length <= bytes.count else { break }
        let data = bytes[(offset + 8)..<(offset + 8 + length)]
        if ["tEXt", "zTXt", "iTXt"].contains(type), let zero = data.firstIndex(of: 0) { keywords.append(String(decoding: data[..<zero], as: UTF8.self)) }
        offset += 12 + length
    }
    return keywords
}

/// Reads the emulator's `comfy-emulator` tEXt chunk: what the image was made from.
func emulatorMetadata(ofPNG bytes: [UInt8]) -> JSONValue? {
    guard bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { return nil }
    var offset = 8
    while offset + 8 <= bytes.count {
        let length = bytes[offset..<offset + 4].reduce(0) { ($0 << 8) | Int($1) }
        let type = String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self)
        let dataStart = offset + 8
        guard dataStart + length <= bytes.count else { return nil }
        if type == "tEXt" {
            let data = Array(bytes[dataStart..<dataStart + length])
            if let zero = data.firstIndex(of: 0), String(decoding: data[..<zero], as: UTF8.self) == "comfy-emulator" {
                return try? JSONValue.parse(data[(zero + 1)...])
            }
        }
        offset = dataStart + length + 4
    }
    return nil
}
