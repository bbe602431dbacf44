// Hand-written (not generated): makes `error.localizedDescription` the core's readable,
// bilingual message, e.g. "未找到住户：h-1 / household not found: h-1". uniffi.toml sets
// `omit_localized_error_conformance = true`, because UniFFI's own conformance would show
// `DoorstepError.NotFound(message: "...")`.
import Foundation

extension DoorstepError: LocalizedError {
    public var errorDescription: String? {
        switch self {
        case .NotFound(let message),
             .InvalidInput(let message),
             .NotAllowed(let message),
             .InvalidTransition(let message),
             .CorruptHousehold(let message),
             .Network(let message),
             .Server(let message),
             .Storage(let message):
            return message
        }
    }
}
