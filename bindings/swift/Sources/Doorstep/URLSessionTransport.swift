// Hand-written (not generated): the library's sync posts through the app's HTTP stack, and
// this is the iOS one, `URLSession`, with the system's TLS, certificates, proxy settings and
// connection reuse. NOT compiled on the Linux machines that wrote it (no Swift toolchain
// there); see ../../../README.md.
import Foundation

/// An `HttpTransport` over `URLSession` (`URLSession.shared` unless you pass your own,
/// e.g. one with a delegate for certificate pinning or a background-friendly configuration).
///
/// `sync` calls `post` once per request, from a `Task` that UniFFI starts and cancels when
/// the library stops waiting (the request exceeded `timeoutSeconds`); cancelling that task
/// cancels the `URLSession` data task. Any status the server answered, 401 or 500 included,
/// is returned: the library reads the server's error text itself. No answer at all throws
/// `TransportError`, which `sync` turns into `DoorstepError.Network`.
public final class URLSessionTransport: HttpTransport {
    public let session: URLSession

    public init(session: URLSession = .shared) {
        self.session = session
    }

    public func post(request: HttpRequest) async throws -> HttpResponse {
        guard let url = URL(string: request.url) else {
            throw TransportError.Failed(reason: "not a URL: \(request.url)")
        }
        var urlRequest = URLRequest(url: url)
        urlRequest.httpMethod = "POST"
        urlRequest.httpBody = request.body
        urlRequest.timeoutInterval = TimeInterval(request.timeoutMs) / 1000
        urlRequest.cachePolicy = .reloadIgnoringLocalAndRemoteCacheData
        for header in request.headers {
            urlRequest.setValue(header.value, forHTTPHeaderField: header.name)
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: urlRequest)
        } catch let error as URLError {
            throw Self.transportError(error, url: request.url)
        }
        guard let http = response as? HTTPURLResponse else {
            throw TransportError.Failed(reason: "\(request.url): the answer is not HTTP")
        }
        return HttpResponse(status: UInt16(clamping: http.statusCode), body: data)
    }

    private static func transportError(_ error: URLError, url: String) -> Error {
        let reason = "\(url): \(error.localizedDescription)"
        switch error.code {
        case .timedOut:
            return TransportError.Timeout
        case .cancelled:
            return CancellationError()
        case .notConnectedToInternet, .cannotFindHost, .cannotConnectToHost, .dnsLookupFailed,
             .internationalRoamingOff, .dataNotAllowed, .callIsActive,
             .secureConnectionFailed, .serverCertificateUntrusted, .serverCertificateHasBadDate,
             .serverCertificateNotYetValid, .serverCertificateHasUnknownRoot,
             .clientCertificateRejected, .clientCertificateRequired,
             .appTransportSecurityRequiresSecureConnection:
            return TransportError.NoConnection(reason: reason)
        default:
            return TransportError.Failed(reason: reason)
        }
    }
}

extension Replica {
    /// `sync(serverUrl:deviceToken:transport:options:)` over `URLSessionTransport()`:
    /// `try await replica.sync(serverUrl: url, deviceToken: token)`.
    public func sync(
        serverUrl: String,
        deviceToken: String,
        options: SyncOptions = SyncOptions()
    ) async throws -> SyncReport {
        try await sync(
            serverUrl: serverUrl,
            deviceToken: deviceToken,
            transport: URLSessionTransport(),
            options: options
        )
    }
}
