import Foundation

/// Input images every gateway instance can read (a shared job store keeps them), so that a job
/// taken over by another instance finds its inputs without a shared `STATE_DIR`.
public protocol SharedInputStore: Sendable {
    /// Keeps the image under its name; storing it again marks it used now.
    func saveInput(_ bytes: [UInt8], named name: String) async throws
    func input(named name: String) async throws -> [UInt8]?
    /// Removes the images not stored again since `date`; returns how many.
    func removeInputs(unusedSince date: Date) async throws -> Int
}
