"""An `HttpTransport` for Python: the standard library's `http.client` (what
`urllib.request` is built on), one connection per request, the blocking exchange in a
worker thread (`asyncio.to_thread`).

`http.client` rather than `urllib.request`: a cancelled sync must abort the request in
flight (the suites check that the server sees the connection closed at once), and only
`http.client` gives access to the socket, which `shutdown` unblocks from another thread.

`Replica.sync` calls `post` from the library's own thread, where no asyncio loop runs:
call `doorstep.uniffi_set_event_loop(asyncio.get_running_loop())` before syncing
(`sync()` in test_sync.py does), so that UniFFI runs `post` on that loop.
"""

import asyncio
import http.client
import socket
import urllib.parse

import doorstep
from doorstep import HttpResponse, TransportError

# UniFFI 0.32's Python bindings cancel a foreign call whose Rust future was dropped (a
# cancelled or timed-out sync) with `loop.call_soon` from the library's thread, which does
# not wake a loop that sleeps in `select`. Waking this often lets that cancellation through.
_WAKE_SECONDS = 0.1


class HttpClientTransport(doorstep.HttpTransport):
    async def post(self, request):
        url = urllib.parse.urlsplit(request.url)
        timeout = request.timeout_ms / 1000
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(url.netloc, timeout=timeout)
        elif url.scheme == "http":
            connection = http.client.HTTPConnection(url.netloc, timeout=timeout)
        else:
            raise TransportError.Failed(reason=f"not an http(s) URL: {request.url}")
        path = url.path + (f"?{url.query}" if url.query else "")
        headers = {h.name: h.value for h in request.headers}

        def exchange():
            try:
                try:
                    connection.connect()
                except TimeoutError:
                    raise TransportError.Timeout() from None
                except OSError as e:
                    raise TransportError.NoConnection(reason=f"{request.url}: {e.strerror or e}") from None
                try:
                    connection.request("POST", path, body=request.body, headers=headers)
                    response = connection.getresponse()
                    return HttpResponse(status=response.status, body=response.read())
                except TimeoutError:
                    raise TransportError.Timeout() from None
                except (OSError, http.client.HTTPException) as e:
                    raise TransportError.Failed(reason=f"{request.url}: {e!r}") from None
            finally:
                connection.close()

        exchanging = asyncio.ensure_future(asyncio.to_thread(exchange))
        try:
            while not exchanging.done():
                await asyncio.wait({exchanging}, timeout=_WAKE_SECONDS)
            return exchanging.result()
        except asyncio.CancelledError:
            # The worker thread is blocked in recv: shutting the socket down ends it, and the
            # server sees the connection closed.
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            exchanging.cancel()  # its outcome is no longer wanted
            raise
