/// What a running job reports before its result: the caller reads them as an `AsyncStream`
/// (`PromptJob.events`) while it awaits the image.
public enum JobEvent: Sendable, Equatable {
    /// ComfyUI began executing the prompt.
    case executionStarted
    /// Progress in 0...1 as ComfyUI reports it; it only rises.
    case progress(Double)
    /// A latent preview image (JPEG) ComfyUI sent while sampling.
    case preview(bytes: [UInt8], mimeType: String)
}
