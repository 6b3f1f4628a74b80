/// What a watcher of one stored job hears: progress, then its end.
public enum JobUpdate: Sendable {
    case progress(Double)
    /// The job is final; `image` carries the bytes of every image when this process made them.
    case finished(JobRecord, image: [[UInt8]]?)
    /// The job ended here but its end could not be stored (disk full): a restart settles it.
    case unstored(JobStoreError)
    /// The gateway stops: the job stays unfinished in the store, for the next start.
    case stopped(ComfyError)
}
