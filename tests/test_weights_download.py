"""`medsora weights download` against an HTTP server the test starts on 127.0.0.1 (the mirror option points at it):
success, a checksum mismatch leaving nothing, an interrupted transfer resumed to the right bytes, and the offline
case in one line. No test reaches an address outside the loopback range."""
import hashlib
import http.server
import json
import socket
import threading

import pytest

from medsora import weights_download as D
from medsora.cli import main


class Server:
    """Serves `files` {name: bytes} with Range support; `cut` {name: n} drops the connection after n bytes once."""

    def __init__(self, files):
        self.files, self.cut, self.requests = dict(files), {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data, start = outer.files[name], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in outer.cut:
                    body = body[:outer.cut.pop(name)]        # the connection drops mid-file
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payloads():
    return {"i3d_torchscript.pt": bytes(range(256)) * 4000, "c3d_ucf101.pt": b"c3d" * 50000}


@pytest.fixture
def server(payloads):
    s = Server(payloads)
    yield s
    s.close()


def test_download_through_a_mirror_records_and_checks_the_lock(server, payloads, tmp_path, capsys):
    assert main(["weights", "download", "i3d", "c3d", "--dir", str(tmp_path), "--mirror", server.url]) == 0
    for name, data in payloads.items():
        assert (tmp_path / name).read_bytes() == data
    lock = json.loads((tmp_path / D.LOCK).read_text())
    assert lock["c3d_ucf101.pt"] == {"sha256": hashlib.sha256(payloads["c3d_ucf101.pt"]).hexdigest(),
                                     "size": len(payloads["c3d_ucf101.pt"]), "source": f"{server.url}/c3d_ucf101.pt"}
    assert "2 network(s) ready" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.part"))
    n = len(server.requests)
    D.download(["i3d"], tmp_path, mirror=server.url, progress=False)          # there and verified: not fetched again
    assert len(server.requests) == n
    (tmp_path / "c3d_ucf101.pt").write_bytes(b"tampered")                   # a later check against the lock fails
    with pytest.raises(D.DownloadError, match=r"c3d_ucf101\.pt is there but is not the right file.*weights\.lock"):
        D.download(["c3d"], tmp_path, mirror=server.url, progress=False)


def test_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch, capsys):
    name = "pt_inception-2015-12-05-6726825d.pth"                            # the name pins a sha256 prefix
    server.files[name] = b"not the inception weights"
    assert main(["weights", "download", "inception", "--dir", str(tmp_path), "--mirror", server.url]) == 2
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]                  # below the progress bar
    assert last.startswith("error: ") and "failed its check" in last and "6726825d" in last
    assert "nothing was kept" in last and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []                                   # no file, no .part, no lock


def test_interrupted_transfer_resumes_to_the_right_bytes(server, payloads, tmp_path):
    data = payloads["i3d_torchscript.pt"]
    server.cut["i3d_torchscript.pt"] = 300_000
    with pytest.raises(D.DownloadError, match="a rerun resumes"):
        D.download(["i3d"], tmp_path, mirror=server.url, progress=False)
    part = tmp_path / "i3d_torchscript.pt.part"
    assert part.read_bytes() == data[:300_000] and not (tmp_path / "i3d_torchscript.pt").exists()
    D.download(["i3d"], tmp_path, mirror=server.url, progress=False)
    assert (tmp_path / "i3d_torchscript.pt").read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("i3d_torchscript.pt", "bytes=300000-")   # only the rest was asked for


def test_offline_is_one_line_exit_2(tmp_path, capsys):
    with socket.socket() as s:                                               # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["weights", "download", "c3d", "--dir", str(tmp_path), "--mirror", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("error: could not download c3d_ucf101.pt") and "Traceback" not in err
    assert not (tmp_path / "c3d_ucf101.pt").exists()
    assert main(["weights", "download", "nonsense", "--dir", str(tmp_path)]) == 2
    assert "unknown network(s) nonsense" in capsys.readouterr().err


def test_every_network_has_a_source():
    for r in D.CATALOG.values():
        assert r.url.startswith("https://") or r.repo, r.name
    assert set(D.CATALOG) >= {"i3d", "c3d", "inception", "videomae", "clip", "raft", "dino", "cogvideox-vae",
                              "lpips-vgg"}
