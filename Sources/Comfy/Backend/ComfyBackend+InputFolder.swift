import Foundation

/// Images a prompt loads: into the shared input folder when this backend reads it, else uploaded.
extension ComfyBackend {
    /// Puts the image where the prompt's `LoadImage` finds it; returns whether it went into the folder.
    @discardableResult
    func place(_ upload: PromptUpload) async throws -> Bool {
        // A second round only when the path led elsewhere: the probe then tells whether ComfyUI
        // reads where it leads now.
        for _ in 0..<2 {
            guard let inputFolder, case .reads(let folder) = await inputFolderAccess(inputFolder) else { break }
            do {
                try await inputFolder.write(upload, expecting: folder)
                return true
            } catch let error as ComfyInputFolderError where error == .moved {
                inputFolderAccess = nil
            } catch {
                logger.warning("cannot write into COMFYUI_INPUT_DIR; uploading over HTTP", metadata: ["error": "\(error)"])
                break
            }
        }
        try await rest.upload(upload)
        return false
    }

    /// Whether ComfyUI sees files written into `folder`: a probe file written there must come
    /// back byte for byte from its `GET /view`. Asked again after the backend reconnects or
    /// refuses a prompt whose images went into the folder; only a clear answer (the probe's
    /// bytes, or 404 or other bytes) is kept, so a backend that cannot answer now is asked again.
    func inputFolderAccess(_ folder: ComfyInputFolder) async -> InputFolderAccess {
        if let known = inputFolderAccess { return known }
        let token = UUID().uuidString
        let probe = PromptUpload(subfolder: "", filename: ".comfy-gateway-probe-\(token)", bytes: Array(token.utf8), mimeType: "application/octet-stream")
        let identity: ComfyInputFolder.Identity
        do {
            identity = try await folder.write(probe)
        } catch {
            logger.warning("cannot write into COMFYUI_INPUT_DIR; images go by POST /upload/image", metadata: ["error": "\(error)"])
            inputFolderAccess = .doesNotRead
            return .doesNotRead
        }
        let response = try? await rest.call("GET", "/view?filename=\(probe.filename)&type=input")
        await folder.remove(probe)
        guard let response, response.status == 200 || response.status == 404 else { return .doesNotRead }
        let reads = response.status == 200 && response.body == probe.bytes
        let access: InputFolderAccess = reads ? .reads(identity) : .doesNotRead
        inputFolderAccess = access
        if reads {
            logger.info("ComfyUI reads COMFYUI_INPUT_DIR: images go straight into it", metadata: ["path": "\(folder.path)"])
        } else {
            logger.warning(
                "ComfyUI does not see COMFYUI_INPUT_DIR (a file written there is not what its GET /view answers); images go by POST /upload/image",
                metadata: ["path": "\(folder.path)", "http.status": "\(response.status)"]
            )
        }
        return access
    }
}
