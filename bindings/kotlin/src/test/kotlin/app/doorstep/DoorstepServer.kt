package app.doorstep

import java.io.BufferedReader
import java.io.InputStreamReader
import java.net.InetAddress
import java.net.ServerSocket
import java.net.Socket
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.charset.StandardCharsets
import java.nio.file.Files
import java.nio.file.Path
import java.time.Duration
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread

/**
 * The real `doorstep-server` binary on a loopback port chosen by the OS, with its data in
 * [dir]. The binary comes from the system property `doorstep.server.bin` (pom.xml; ci.sh
 * passes the one `cargo test --workspace --all-targets --no-run` built). [close] kills it.
 */
class DoorstepServer private constructor(
    private val process: Process,
    /** `http://127.0.0.1:PORT` */
    val url: String,
    /** The admin's token, created with the CLI before the server started. */
    val adminToken: String,
    private val log: Path,
) : AutoCloseable {

    companion object {
        private val http: HttpClient = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build()

        val binary: Path by lazy {
            val configured = System.getProperty("doorstep.server.bin")
                ?: error("system property doorstep.server.bin is not set (see bindings/kotlin/pom.xml)")
            Path.of(configured).also {
                check(Files.isExecutable(it)) {
                    "$it does not exist: build it with `cargo build -p doorstep-server` (bindings/ci.sh does)"
                }
            }
        }

        private fun command(vararg args: String): ProcessBuilder =
            ProcessBuilder(listOf(binary.toString()) + args).also {
                val env = it.environment()
                env.keys.removeIf { key -> key.startsWith("DOORSTEP_") } // no outside configuration
                env["RUST_LOG"] = "warn"
            }

        /** Create the admin with the CLI, start the server and wait until it listens. */
        fun start(dir: Path): DoorstepServer {
            val data = dir.resolve("server-data")
            val admin = command("admin", "--data-dir", data.toString(), "create-admin", "admin", "管理员")
                .redirectErrorStream(true)
                .start()
            val adminOut = admin.inputStream.readAllBytes().toString(StandardCharsets.UTF_8)
            check(admin.waitFor(30, TimeUnit.SECONDS) && admin.exitValue() == 0) { "create-admin failed: $adminOut" }
            val adminToken = jsonString(adminOut, "token")

            val log = dir.resolve("server.log")
            val process = command("serve", "--listen", "127.0.0.1:0", "--data-dir", data.toString())
                .redirectError(log.toFile())
                .start()
            val url = LinkedBlockingQueue<String>()
            thread(isDaemon = true, name = "doorstep-server stdout") {
                BufferedReader(InputStreamReader(process.inputStream, StandardCharsets.UTF_8)).useLines { lines ->
                    for (line in lines) { // keep draining after the first line
                        if (line.startsWith("doorstep-server listening on ")) url += line.removePrefix("doorstep-server listening on ")
                    }
                }
            }
            val address = url.poll(30, TimeUnit.SECONDS)
            if (address == null) {
                process.destroyForcibly().waitFor(10, TimeUnit.SECONDS)
                error("doorstep-server did not start listening: ${Files.readString(log)}")
            }
            check(address.startsWith("http://127.0.0.1:")) { "not a loopback address: $address" }
            return DoorstepServer(process, address, adminToken, log)
        }

        /** The string value of [key] in a flat JSON object (ids, tokens, codes: no escapes). */
        fun jsonString(json: String, key: String): String =
            Regex("\"${Regex.escape(key)}\"\\s*:\\s*\"([^\"\\\\]*)\"").find(json)?.groupValues?.get(1)
                ?: error("no \"$key\" in $json")

        private fun quote(value: String) = "\"" + value.replace("\\", "\\\\").replace("\"", "\\\"") + "\""
        private fun list(values: List<String>) = values.joinToString(",", "[", "]") { quote(it) }
    }

    /** POST a JSON body to the admin API; the response body (asserts 200). */
    fun post(path: String, json: String, token: String? = adminToken): String {
        val request = HttpRequest.newBuilder(URI.create(url + path))
            .timeout(Duration.ofSeconds(30))
            .header("content-type", "application/json")
            .apply { if (token != null) header("authorization", "Bearer $token") }
            .POST(HttpRequest.BodyPublishers.ofString(json))
            .build()
        val response = http.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8))
        check(response.statusCode() == 200) { "POST $path $json: ${response.statusCode()} ${response.body()}" }
        return response.body()
    }

    fun branch(id: String) = post("/v1/admin/branches", """{"id":${quote(id)},"name":${quote("$id 支部")}}""")
    fun community(id: String) = post("/v1/admin/communities", """{"id":${quote(id)},"name":${quote("$id 社区")}}""")
    fun member(id: String, name: String, branch: String) =
        post("/v1/admin/members", """{"id":${quote(id)},"name":${quote(name)},"role":"member","branch_id":${quote(branch)}}""")

    /** Create a household; its id. */
    fun household(familyName: String, community: String, branch: String, members: List<String>): String =
        jsonString(
            post(
                "/v1/admin/households",
                """{"family_name":${quote(familyName)},"address":"平洲路 1 号","community_id":${quote(community)},""" +
                    """"branch_id":${quote(branch)},"assigned_members":${list(members)}}""",
            ),
            "id",
        )

    /** A device enrolled for [member], as a phone does it: (device id, device token). */
    fun device(member: String): Pair<String, String> {
        val code = jsonString(post("/v1/admin/devices", """{"member_id":${quote(member)},"label":"test phone"}"""), "enrolment_code")
        val token = post("/v1/enrol", """{"code":${quote(code)}}""", token = null)
        return jsonString(token, "device_id") to jsonString(token, "token")
    }

    /** The server's log (stderr) so far, for failure messages. */
    fun log(): String = Files.readString(log)

    /** Kill the process and wait for it. */
    override fun close() {
        process.destroyForcibly()
        process.waitFor(10, TimeUnit.SECONDS)
    }
}

/** A port on 127.0.0.1 that nothing listens on (bound, then closed). */
fun closedLoopbackPort(): Int = ServerSocket(0, 1, InetAddress.getLoopbackAddress()).use { it.localPort }

/**
 * A loopback "server" that accepts connections and never answers: a sync to it stays in
 * flight until its timeout, its cancellation, or [close].
 */
class StalledServer : AutoCloseable {
    private val socket = ServerSocket(0, 50, InetAddress.getLoopbackAddress())
    val url = "http://127.0.0.1:${socket.localPort}"
    /** Connections accepted so far, in order. */
    val accepted = LinkedBlockingQueue<Socket>()
    private val all = CopyOnWriteArrayList<Socket>()

    init {
        thread(isDaemon = true, name = "stalled server") {
            while (!socket.isClosed) {
                val s = runCatching { socket.accept() }.getOrNull() ?: break
                all += s
                accepted += s
            }
        }
    }

    /** Wait for the next connection. */
    fun nextConnection(): Socket = accepted.poll(30, TimeUnit.SECONDS) ?: error("no connection to the stalled server")

    override fun close() {
        socket.close()
        all.forEach { runCatching { it.close() } }
    }
}
