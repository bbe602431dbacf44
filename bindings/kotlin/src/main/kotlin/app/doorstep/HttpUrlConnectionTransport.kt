package app.doorstep

import app.doorstep.ffi.HttpRequest
import app.doorstep.ffi.HttpResponse
import app.doorstep.ffi.HttpTransport
import app.doorstep.ffi.TransportException
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import java.io.IOException
import java.net.ConnectException
import java.net.HttpURLConnection
import java.net.NoRouteToHostException
import java.net.SocketTimeoutException
import java.net.URI
import java.net.UnknownHostException
import java.util.concurrent.atomic.AtomicReference
import javax.net.ssl.SSLHandshakeException

/**
 * The library's sync posts through this by default: `java.net.HttpURLConnection`, which
 * Android and the JVM both have (no extra dependency). It uses the platform's TLS,
 * certificate store and proxy settings. The blocking exchange runs on [io]
 * ([Dispatchers.IO] by default); connect and read timeouts are the request's `timeoutMs`
 * (the library also stops waiting after that long, whatever the transport does).
 * Cancelling the call (a cancelled or timed-out sync) disconnects, so the server sees the
 * connection closed at once.
 *
 * An app with its own HTTP stack implements [HttpTransport] instead, e.g. over OkHttp
 * (`client.newCall(...)`, with `call.cancel()` on cancellation) to share its connection
 * pool, interceptors and certificate pinning, and passes it to [DoorstepReplica].
 *
 * No answer at all throws [TransportException] (`Timeout`, `NoConnection`, `Failed`),
 * which `sync` turns into `DoorstepException.Network`. Any status the server answered,
 * 401 or 500 included, is returned: the library reads the server's error text itself.
 */
class HttpUrlConnectionTransport(
    private val io: CoroutineDispatcher = Dispatchers.IO,
) : HttpTransport {

    override suspend fun post(request: HttpRequest): HttpResponse = coroutineScope {
        val connection = open(request)
        // Whether the exchange connected (true) or the call was cancelled (false) first.
        // `disconnect` does nothing while `connect` is still opening the socket, so whichever
        // of the two comes second closes it.
        val connected = AtomicReference<Boolean?>(null)
        val exchange = async(io) { exchange(connection, request, connected) }
        try {
            exchange.await()
        } catch (e: CancellationException) {
            // The blocking read does not notice cancellation: closing the socket ends it.
            if (!connected.compareAndSet(null, false)) connection.disconnect()
            throw e
        }
    }

    private fun open(request: HttpRequest): HttpURLConnection {
        val connection = try {
            URI(request.url).toURL().openConnection() as HttpURLConnection
        } catch (e: Exception) {
            throw TransportException.Failed("cannot open ${request.url}: $e")
        }
        val timeoutMs = request.timeoutMs.coerceAtMost(Int.MAX_VALUE.toULong()).toInt()
        connection.requestMethod = "POST"
        connection.doOutput = true
        connection.useCaches = false
        connection.instanceFollowRedirects = false // a redirect (captive portal) is an answer to show
        connection.connectTimeout = timeoutMs
        connection.readTimeout = timeoutMs
        // No fixed-length streaming mode: with it, a 401 answer throws HttpRetryException and
        // its body (the server's readable reason) is lost. The body is in memory anyway.
        for (header in request.headers) connection.setRequestProperty(header.name, header.value)
        return connection
    }

    private fun exchange(
        connection: HttpURLConnection,
        request: HttpRequest,
        connected: AtomicReference<Boolean?>,
    ): HttpResponse {
        try {
            connection.connect()
        } catch (e: SocketTimeoutException) {
            throw TransportException.Timeout()
        } catch (e: IOException) {
            throw TransportException.NoConnection("${request.url}: ${e.message ?: e}")
        }
        if (!connected.compareAndSet(null, true)) {
            connection.disconnect()
            throw CancellationException("the sync was cancelled while connecting")
        }
        try {
            connection.outputStream.use { it.write(request.body) }
            val status = connection.responseCode
            if (status < 0) throw TransportException.Failed("${request.url}: the answer is not HTTP")
            val stream = if (status >= 400) connection.errorStream else connection.inputStream
            val body = stream?.use { it.readBytes() } ?: ByteArray(0)
            return HttpResponse(status.toUShort(), body)
        } catch (e: SocketTimeoutException) {
            throw TransportException.Timeout()
        } catch (e: IOException) {
            throw when (e) {
                is ConnectException, is UnknownHostException, is NoRouteToHostException, is SSLHandshakeException ->
                    TransportException.NoConnection("${request.url}: ${e.message ?: e}")
                else -> TransportException.Failed("${request.url}: $e")
            }
        }
    }
}
