import Comfy

/// The body of `/api/generate` and `/api/generate_file`, validated (as the original generate API defines it).
struct GenerateRequest: Sendable {
    enum ResponseType: String, Sendable { case url, file }

    var workflow: [String: JSONValue]
    var outputNodeID: String?
    var responseType: ResponseType
    /// Where the job's end is posted (`POST /api/jobs` only).
    var webhookURL: String?
    /// `output_format` (png, webp, jpeg) and `quality` (1–100).
    var outputFormat: OutputFormat

    /// An input image as sent (a URL, a data URL or base64), and the node inputs it goes to.
    struct InputImage: Sendable {
        enum Given: Sendable {
            /// A URL, a data URL or base64.
            case text(String)
            /// A file part of a multipart body.
            case bytes([UInt8])
        }

        /// The request field or tool parameter that held it, for errors.
        var field: String
        var given: Given
        var targets: [WorkflowTool.Target]
    }

    /// Input images for loader nodes (`input_images` by node id, or a tool's image parameters).
    var inputImages: [InputImage] = []
    /// The inputs the caller set, which `WorkflowLimits` hold to: `nil` when the caller sent
    /// the whole graph; a workflow tool's parameters given in the call (the rest of its graph
    /// holds the operator's values).
    var callerInputs: [WorkflowTool.Target]?

    /// A request built by a route (a workflow tool) rather than read from a body.
    init(workflow: [String: JSONValue], outputNodeID: String?, options: [String: JSONValue]) throws(APIError) {
        self.workflow = workflow
        self.outputNodeID = outputNodeID
        webhookURL = try Self.webhookURL(options)
        responseType = try Self.responseType(options)
        outputFormat = try Self.outputFormat(options)
    }

    /// A JSON body, or a multipart one: `workflow_data` (JSON text) and the other fields as text
    /// parts, and image files in parts named by the id of the loader node they go to.
    init(body: [UInt8], contentType: String?) throws {
        guard BodyKind.multipart.accepts(contentType) else {
            try self.init(object: try Self.object(body))
            return
        }
        let form = try MultipartForm(body: body, contentType: contentType)
        var object: [String: JSONValue] = [:]
        var files: [MultipartForm.Part] = []
        for part in form.parts {
            if part.filename != nil || !Self.formFields.contains(part.name) {
                files.append(part)
            } else if part.name == "workflow_data" || part.name == "input_images" {
                do {
                    object[part.name] = try JSONValue.parse(part.body)
                } catch {
                    throw APIError(.invalidJSON, "the form's \(part.name) field is not valid JSON")
                }
            } else {
                object[part.name] = .string(String(decoding: part.body, as: UTF8.self))
            }
        }
        try self.init(object: object)
        for file in files {
            guard let node = workflow[file.name], NodePolicy.loaderClasses.contains(node["class_type"]?.stringValue ?? "") else {
                throw APIError(.invalidRequest, "the form's file part \"\(file.name.prefix(64))\" does not name an image loader node of workflow_data", details: ["node_id": .string(file.name)])
            }
            inputImages.append(InputImage(field: file.name, given: .bytes(file.body), targets: [WorkflowTool.Target(nodeID: file.name, input: "image")]))
        }
    }

    /// The most values (strings, numbers, lists, ...) a workflow may hold: ComfyUI's `/queue`
    /// answer quotes every queued one, and the gateway must read that answer (a large workflow
    /// holds a few thousand).
    static let maxWorkflowValues = 50_000
    /// The longest node title (`_meta.title`) passed on.
    static let maxTitleLength = 256

    /// The text fields of a multipart body; any other part is an image for the node it names.
    static let formFields: Set<String> = ["workflow_data", "output_node_id", "response_type", "webhook_url", "input_images", "output_format", "quality"]

    init(object: [String: JSONValue]) throws(APIError) {
        guard let workflowValue = object["workflow_data"] else { throw APIError(.invalidRequest, "workflow_data is missing") }
        guard let workflow = workflowValue.objectValue else {
            throw APIError(.invalidRequest, "workflow_data must be an object (a ComfyUI API-format prompt)")
        }
        if workflow["nodes"]?.arrayValue != nil, workflow["links"] != nil {
            throw APIError(.invalidRequest, "workflow_data is in ComfyUI's UI format; export it with \"Export (API)\" in ComfyUI and send that")
        }
        guard !workflow.isEmpty else { throw APIError(.invalidRequest, "workflow_data has no nodes") }
        var forwarded: [String: JSONValue] = [:]
        var values = 0
        for (id, node) in workflow {
            guard let members = node.objectValue else { throw APIError(.invalidRequest, "workflow_data node \"\(id)\" must be an object") }
            guard let classType = members["class_type"], classType.stringValue != nil else {
                throw APIError(.invalidRequest, "workflow_data node \"\(id)\" has no class_type", details: ["node_id": .string(id)])
            }
            if let inputs = members["inputs"], inputs.objectValue == nil {
                throw APIError(.invalidRequest, "workflow_data node \"\(id)\" has inputs that are not an object", details: ["node_id": .string(id)])
            }
            // What ComfyUI runs: the class and the inputs, and the title it shows in errors.
            // Anything else goes nowhere: ComfyUI quotes it back in /queue and /history, where
            // nested or huge it made those answers unreadable, and `is_changed` is its cache key.
            var node: [String: JSONValue] = ["class_type": classType]
            if let inputs = members["inputs"] { node["inputs"] = inputs }
            if let title = members["_meta"]?["title"]?.stringValue, title.unicodeScalars.count <= Self.maxTitleLength {
                node["_meta"] = .object(["title": .string(title)])
            }
            values += JSONValue.object(node).valueCount
            forwarded[id] = .object(node)
        }
        guard values <= Self.maxWorkflowValues else {
            throw APIError(.invalidRequest, "workflow_data holds more than \(Self.maxWorkflowValues) values")
        }
        self.workflow = forwarded

        switch object["output_node_id"] {
        case nil, .null:
            outputNodeID = nil
        case .string(let id):
            outputNodeID = id.isEmpty || id == "0" ? nil : id
        case .number(let number):
            guard let id = JSONValue.number(number).intValue else {
                throw APIError(.invalidRequest, "output_node_id must be a node id (a string or a whole number)")
            }
            outputNodeID = id == 0 ? nil : String(id)
        default:
            throw APIError(.invalidRequest, "output_node_id must be a node id (a string or a whole number)")
        }
        if let id = outputNodeID, workflow[id] == nil {
            throw APIError(.unknownOutputNode, "output_node_id \"\(id)\" is not a node of workflow_data", details: ["node_id": .string(id)])
        }

        webhookURL = try Self.webhookURL(object)
        responseType = try Self.responseType(object)
        outputFormat = try Self.outputFormat(object)

        switch object["input_images"] {
        case nil, .null:
            break
        case .object(let images):
            for (id, value) in images.sorted(by: { $0.key < $1.key }) {
                guard let node = workflow[id] else {
                    throw APIError(.invalidRequest, "input_images names node \"\(id.prefix(64))\", which is not in workflow_data", details: ["node_id": .string(id)])
                }
                guard NodePolicy.loaderClasses.contains(node["class_type"]?.stringValue ?? "") else {
                    throw APIError(.invalidRequest, "input_images names node \"\(id)\", which is not an image loader", details: ["node_id": .string(id)])
                }
                guard let text = value.stringValue else {
                    throw APIError(.invalidRequest, "input_images[\"\(id)\"] must be a URL, a data URL or base64 string", details: ["node_id": .string(id)])
                }
                inputImages.append(InputImage(field: "input_images.\(id)", given: .text(text), targets: [WorkflowTool.Target(nodeID: id, input: "image")]))
            }
        default:
            throw APIError(.invalidRequest, "input_images must be an object of node id → image")
        }
    }

    /// The body as a JSON object, with the strict parser's refusals as API errors.
    static func object(_ body: [UInt8]) throws(APIError) -> [String: JSONValue] {
        guard !body.isEmpty else { throw APIError(.invalidJSON, "the request body is empty; send a JSON object") }
        let parsed: JSONValue
        do {
            parsed = try JSONValue.parse(body)
        } catch let failure as JSONParser.Failure {
            switch failure.kind {
            case .syntax: throw APIError(.invalidJSON, "the request body is not valid JSON: \(failure.message) at byte \(failure.offset)")
            case .numberOutOfRange, .duplicateKey: throw APIError(.invalidRequest, "\(failure.message) (at byte \(failure.offset))")
            }
        } catch {
            throw APIError(.invalidJSON, "the request body is not valid JSON")
        }
        guard let object = parsed.objectValue else { throw APIError(.invalidRequest, "the request body must be a JSON object") }
        return object
    }

    private static func webhookURL(_ object: [String: JSONValue]) throws(APIError) -> String? {
        switch object["webhook_url"] {
        case nil, .null:
            return nil
        case .string(let url):
            return url.isEmpty ? nil : url
        default:
            throw APIError(.invalidRequest, "webhook_url must be a URL string", details: ["field": "webhook_url"])
        }
    }

    private static func responseType(_ object: [String: JSONValue]) throws(APIError) -> ResponseType {
        switch object["response_type"] {
        case nil, .null:
            return .url
        case .string(let text):
            guard let type = ResponseType(rawValue: text) else {
                throw APIError(.invalidRequest, "response_type must be \"url\" or \"file\", got \"\(text)\"")
            }
            return type
        default:
            throw APIError(.invalidRequest, "response_type must be \"url\" or \"file\"")
        }
    }

    private static func outputFormat(_ object: [String: JSONValue]) throws(APIError) -> OutputFormat {
        var kind = OutputFormat.Kind.png
        switch object["output_format"] {
        case nil, .null:
            break
        case .string(let text):
            guard let named = OutputFormat.Kind(rawValue: text == "jpg" ? "jpeg" : text.lowercased()) else {
                throw APIError(.invalidParameter, "output_format must be png, webp or jpeg, got \"\(text.prefix(32))\"", details: ["parameter": "output_format"])
            }
            kind = named
        default:
            throw APIError(.invalidParameter, "output_format must be png, webp or jpeg", details: ["parameter": "output_format"])
        }
        var quality = OutputFormat.defaultQuality
        switch object["quality"] {
        case nil, .null:
            break
        case .number(let number) where number.rounded() == number && (1...100).contains(number):
            quality = Int(number)
        // A form sends text.
        case .string(let text) where Int(text).map { (1...100).contains($0) } == true:
            quality = Int(text)!
        default:
            throw APIError(.invalidParameter, "quality must be a whole number from 1 to 100", details: ["parameter": "quality"])
        }
        return OutputFormat(kind: kind, quality: quality)
    }
}
