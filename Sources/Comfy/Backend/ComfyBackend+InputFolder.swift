import Foundation

/// Images a prompt loads: into the shared input folder when this backend reads it, else uploaded.
extension ComfyBackend {
    /// Puts the image where the prompt's `LoadImage` finds it.
    func place(_ upload: PromptUpload) async throws {
        if let inputFolder, await readsInputFolder(inputFolder) {
            do {
                try await inputFolder.write(upload)
                return
            } catch {
                logger.warning("cannot write into COMFYUI_INPUT_DIR; uploading over HTTP", metadata: ["error": "\(error)"])
            }
        }
        try await rest.upload(upload)
    }

    /// Whether ComfyUI sees files written into `folder`: a probe file written there must come
    /// back byte for byte from its `GET /view`. Asked once per backend; a backend that cannot
    /// be reached now is asked again next time.
    func readsInputFolder(_ folder: ComfyInputFolder) async -> Bool {
        if let known = inputFolderReadable { return known }
        let token = UUID().uuidString
        let probe = PromptUpload(subfolder: "", filename: ".comfy-gateway-probe-\(token)", bytes: Array(token.utf8), mimeType: "application/octet-stream")
        do {
            try await folder.write(probe)
        } catch {
            logger.warning("cannot write into COMFYUI_INPUT_DIR; images go by POST /upload/image", metadata: ["error": "\(error)"])
            inputFolderReadable = false
            return false
        }
        let response = try? await rest.call("GET", "/view?filename=\(probe.filename)&type=input")
        await folder.remove(probe)
        guard let response, response.status < 500 else { return false }
        let reads = response.status == 200 && response.body == probe.bytes
        inputFolderReadable = reads
        if reads {
            logger.info("ComfyUI reads COMFYUI_INPUT_DIR: images go straight into it", metadata: ["path": "\(folder.path)"])
        } else {
            logger.warning(
                "ComfyUI does not see COMFYUI_INPUT_DIR (a file written there is not what its GET /view answers); images go by POST /upload/image",
                metadata: ["path": "\(folder.path)", "http.status": "\(response.status)"]
            )
        }
        return reads
    }
}
