"""The real `doorstep-server` binary for the sync tests, on 127.0.0.1 with a port chosen by
the OS and a temporary data directory, set up through its admin JSON API (urllib).

The binary is $DOORSTEP_SERVER_BIN (bindings/ci.sh passes the one `cargo test --workspace
--all-targets --no-run` built), by default the workspace's target/debug/doorstep-server."""

import json
import os
import queue
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("DOORSTEP_SERVER_BIN", ROOT / "target" / "debug" / "doorstep-server"))
LISTENING = "doorstep-server listening on "


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORSTEP_")}  # no outside configuration
    env["RUST_LOG"] = "warn"
    return env


class Server:
    """A running server; `stop()` kills it."""

    def __init__(self, directory: Path):
        if not os.access(BINARY, os.X_OK):
            raise RuntimeError(f"{BINARY} does not exist: build it with `cargo build -p doorstep-server` (bindings/ci.sh does)")
        data = directory / "server-data"
        admin = subprocess.run(
            [str(BINARY), "admin", "--data-dir", str(data), "create-admin", "admin", "管理员"],
            capture_output=True, env=_env(), timeout=60, check=False,
        )
        if admin.returncode != 0:
            raise RuntimeError(f"create-admin failed: {admin.stdout!r} {admin.stderr!r}")
        self.admin_token = json.loads(admin.stdout)["token"]

        self.log = directory / "server.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(BINARY), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                stdout=subprocess.PIPE, stderr=log, env=_env(),
            )
        urls = queue.Queue()

        def read_stdout():  # and keep draining it
            for line in self.process.stdout:
                line = line.decode("utf-8", "replace").strip()
                if line.startswith(LISTENING):
                    urls.put(line[len(LISTENING):])

        threading.Thread(target=read_stdout, daemon=True).start()
        try:
            self.url = urls.get(timeout=30)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"doorstep-server did not start listening: {self.log.read_text()}") from None
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def stop(self):
        self.process.kill()
        self.process.wait(timeout=10)

    def post(self, path, body, token="admin"):
        """POST JSON to the server; the JSON answer (asserts 200)."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        request.add_header("content-type", "application/json")
        if token == "admin":
            token = self.admin_token
        if token:
            request.add_header("authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:  # raises HTTPError unless 2xx
            assert response.status == 200, (path, response.status)
            return json.loads(response.read())

    def branch(self, id_):
        self.post("/v1/admin/branches", {"id": id_, "name": f"{id_} 支部"})

    def community(self, id_):
        self.post("/v1/admin/communities", {"id": id_, "name": f"{id_} 社区"})

    def member(self, id_, name, branch):
        self.post("/v1/admin/members", {"id": id_, "name": name, "role": "member", "branch_id": branch})

    def household(self, family_name, community, branch, members):
        body = {
            "family_name": family_name, "address": "平洲路 1 号", "community_id": community,
            "branch_id": branch, "assigned_members": members,
        }
        return self.post("/v1/admin/households", body)["id"]

    def device(self, member):
        """Enrol a device as a phone does: (device id, device token)."""
        code = self.post("/v1/admin/devices", {"member_id": member, "label": "test phone"})["enrolment_code"]
        token = self.post("/v1/enrol", {"code": code}, token=None)
        return token["device_id"], token["token"]


def closed_loopback_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StalledServer:
    """Accepts connections on 127.0.0.1 and never answers: a sync to it stays in flight."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.accepted = queue.Queue()
        self.connections = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)
            self.accepted.put(connection)

    def next_connection(self):
        return self.accepted.get(timeout=30)

    def close(self):
        self.socket.close()
        for c in self.connections:
            c.close()
