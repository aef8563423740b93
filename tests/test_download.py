"""Downloads, offline: a local HTTP server (with Range support) serves a small archive the tests build."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qparse_lite.cli import main
from qparse_lite.data import download as D
from qparse_lite.data.datasets import ATR, CCP_COMMIT
from qparse_lite.errors import QparseError

# ---------------------------------------------------------------------------------------------------------
# a local server
# ---------------------------------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``server.directory``; honours ``Range: bytes=N-`` with 206 unless ``server.no_range``."""

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=server.directory)

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        self.server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        path = Path(self.translate_path(self.path))
        rng = self.headers.get("Range")
        if not path.is_file() or not rng or self.server.no_range:  # type: ignore[attr-defined]
            return super().do_GET()
        data = path.read_bytes()
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    """(base_url, served folder, server) of an HTTP server in a thread."""
    folder = tmp_path / "www"
    folder.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.directory, srv.requests, srv.no_range = str(folder), [], False  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", folder, srv
    srv.shutdown()
    srv.server_close()


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------------------------
# a small CCP-like archive
# ---------------------------------------------------------------------------------------------------------

WANTED = ["LICENSE", "label_list.mat", "photos/0001.jpg", "photos/0002.jpg",
          "annotations/pixel-level/0001.mat", "annotations/pixel-level/0002.mat"]  # fmt: skip
EXTRA = ["photos/1005.jpg", "annotations/image-level/0001.mat", "README.md", "show_pixel_label.m"]


def _content(name: str) -> bytes:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    return name.encode() + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()


@pytest.fixture
def ccp_zip(server):
    base, folder, srv = server
    top = f"clothing-co-parsing-{CCP_COMMIT}"
    zpath = folder / "ccp.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{top}/", "")
        for name in WANTED + EXTRA:
            z.writestr(f"{top}/{name}", _content(name))
    sums = {n: hashlib.sha256(_content(n)).hexdigest() for n in WANTED}
    return f"{base}/ccp.zip", zpath, sums, srv


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------------------------------------------------
# CCP
# ---------------------------------------------------------------------------------------------------------


def test_shipped_checksum_list_matches_the_mirror(ccp_root):
    sums = D.read_sums(D.CCP_SUMS_FILE)
    assert len(sums) == 2010
    assert {
        "LICENSE",
        "label_list.mat",
        "photos/0001.jpg",
        "photos/1004.jpg",
        "annotations/pixel-level/1004.mat",
    } <= set(sums)
    assert "photos/1005.jpg" not in sums and "SOURCE.md" not in sums
    assert sums == D.read_sums(ccp_root / "SHA256SUMS")


def test_verified_root_is_used_offline_and_untouched(ccp_root, tmp_path):
    before = _snapshot(ccp_root)
    assert D.download_ccp(ccp_root, url=_closed_port_url() + "/x.zip", progress=False) == ccp_root
    assert _snapshot(ccp_root) == before  # nothing written, not even a temp folder
    assert D.verify_ccp(ccp_root, progress=False) == 2010


def test_download_extracts_only_listed_files_and_verifies(ccp_zip, tmp_path):
    url, _, sums, srv = ccp_zip
    root = tmp_path / "ccp"
    assert D.download_ccp(root, url=url, sums=sums, progress=False) == root
    got = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert got == sorted(WANTED)
    for n in WANTED:
        assert (root / n).read_bytes() == _content(n)
    assert not (root / ".download").exists()  # archive removed
    # second call: verified, no network
    n_req = len(srv.requests)
    D.download_ccp(root, url=url, sums=sums, progress=False)
    assert len(srv.requests) == n_req


def test_download_repairs_only_broken_files(ccp_zip, tmp_path):
    url, _, sums, _ = ccp_zip
    root = tmp_path / "ccp"
    D.download_ccp(root, url=url, sums=sums, progress=False)
    (root / "photos/0002.jpg").write_bytes(b"tampered")
    keep = (root / "photos/0001.jpg").stat().st_mtime_ns
    with pytest.raises(QparseError, match=r"photos/0002\.jpg: checksum mismatch"):
        D.verify_tree(root, sums, fix="X")
    D.download_ccp(root, url=url, sums=sums, progress=False)
    assert (root / "photos/0002.jpg").read_bytes() == _content("photos/0002.jpg")
    assert (root / "photos/0001.jpg").stat().st_mtime_ns == keep


def test_resume_with_range_from_partial_file(ccp_zip, tmp_path):
    url, zpath, sums, srv = ccp_zip
    root = tmp_path / "ccp"
    data = zpath.read_bytes()
    part = root / ".download" / f"clothing-co-parsing-{CCP_COMMIT}.zip.part"
    part.parent.mkdir(parents=True)
    half = len(data) // 2
    part.write_bytes(data[:half])
    D.download_ccp(root, url=url, sums=sums, progress=False, keep_archive=True)
    assert srv.requests[-1] == ("/ccp.zip", f"bytes={half}-")
    archive = root / ".download" / f"clothing-co-parsing-{CCP_COMMIT}.zip"
    assert archive.read_bytes() == data and not part.exists()
    D.verify_tree(root, sums)


def test_server_without_range_restarts_the_file(ccp_zip, tmp_path):
    url, zpath, sums, srv = ccp_zip
    srv.no_range = True
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"garbage that is not a prefix")
    D.fetch(url, dest, progress=False)
    assert dest.read_bytes() == zpath.read_bytes()


def test_checksum_mismatch_names_the_file_and_writes_nothing(ccp_zip, tmp_path):
    url, _, sums, _ = ccp_zip
    bad = dict(sums)
    bad["photos/0002.jpg"] = "0" * 64
    root = tmp_path / "ccp"
    with pytest.raises(QparseError, match=r"photos/0002\.jpg: SHA-256 .* differs from the shipped list"):
        D.download_ccp(root, url=url, sums=bad, progress=False)
    assert not (root / "photos/0002.jpg").exists()
    assert not list(root.rglob(".*.tmp"))  # no temporary files left behind


def test_fetch_checks_sha256_and_size(server, tmp_path):
    base, folder, _ = server
    (folder / "f.bin").write_bytes(b"x" * 1000)
    with pytest.raises(QparseError, match=r"f\.bin: SHA-256 mismatch"):
        D.fetch(f"{base}/f.bin", tmp_path / "f.bin", sha256="1" * 64, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    good = hashlib.sha256(b"x" * 1000).hexdigest()
    assert (
        D.fetch(f"{base}/f.bin", tmp_path / "f.bin", sha256=good, size=1000, progress=False).read_bytes()
        == b"x" * 1000
    )
    with pytest.raises(QparseError, match="HTTP 404"):
        D.fetch(f"{base}/missing.bin", tmp_path / "m.bin", progress=False)


def test_offline_gives_a_clear_error(tmp_path, capsys):
    with pytest.raises(QparseError, match=r"cannot download .*Fix: check the network"):
        D.fetch(_closed_port_url() + "/x.zip", tmp_path / "x.zip", progress=False)
    rc = main(
        [
            "data",
            "download",
            "ccp",
            "--data-root",
            str(tmp_path / "c"),
            "--url",
            _closed_port_url() + "/x",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "cannot download" in err and "Traceback" not in err


def test_cli_download_verify_and_broken_tree(ccp_zip, tmp_path, capsys, monkeypatch):
    url, _, sums, _ = ccp_zip
    sums_file = tmp_path / "sums.txt"
    D.write_sums(sums_file, sums)
    assert D.read_sums(sums_file) == sums
    monkeypatch.setattr(D, "CCP_SUMS_FILE", sums_file)
    root = tmp_path / "ccp"
    assert main(["data", "download", "ccp", "--data-root", str(root), "--url", url, "--no-progress"]) == 0
    assert main(["data", "verify", "ccp", "--data-root", str(root), "--no-progress"]) == 0
    assert "all 6 CCP files" in capsys.readouterr().out
    (root / "label_list.mat").unlink()
    assert main(["data", "verify", "ccp", "--root", str(root), "--no-progress"]) == 2  # the deprecated --root alias still parses
    err = capsys.readouterr().err
    assert "label_list.mat: missing" in err and f"qparse data download --dataset ccp --data-root {root}" in err


# ---------------------------------------------------------------------------------------------------------
# ATR
# ---------------------------------------------------------------------------------------------------------


def _hf_site(folder: Path, n_files: int = 2, tree: bool = True) -> dict[str, bytes]:
    """Mimic the Hub: tree API listing + resolve URLs (or only the /parquet endpoint)."""
    from test_datasets import make_atr_parquet

    src = make_atr_parquet(folder.parent / "src", n=6)
    files = {f"data/{p.name}": p.read_bytes() for p in sorted((src / "data").glob("*.parquet"))}
    repo = folder / "datasets" / D.HF_REPO / "resolve" / "main"
    for rel, data in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    api = folder / "api" / "datasets" / D.HF_REPO
    if tree:
        listing = [{"type": "file", "path": rel, "size": len(d), "lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d)}}
                   for rel, d in files.items()]  # fmt: skip
        (api / "tree" / "main").mkdir(parents=True)
        (api / "tree" / "main" / "data").write_text(json.dumps(listing))
    else:
        api.mkdir(parents=True)
        (api / "parquet").write_text(json.dumps({"default": {"train": []}}))
    return files


def test_download_atr_parquet_via_tree_api(server, tmp_path):
    base, folder, srv = server
    files = _hf_site(folder)
    root = tmp_path / "atr"
    D.download_atr(root, endpoint=base, progress=False)
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data
    assert set(D.read_sums(root / "SHA256SUMS")) == set(files)
    src = json.loads((root / "SOURCE.json").read_text())
    assert src["repo"] == D.HF_REPO and src["listing"] == "tree"
    ds = ATR(root)
    assert ds.layout == "parquet" and len(ds) == 6 and ds.version == f"hf:{D.HF_REPO}@main"
    assert D.verify_atr(root) == {"layout": "parquet", "files": 2}
    n = len(srv.requests)
    D.download_atr(root, endpoint=base, progress=False)  # already there: no network
    assert len(srv.requests) == n
    (root / next(iter(files))).write_bytes(b"PAR1 broken")
    with pytest.raises(QparseError, match=r"train-00000-of-00002\.parquet: checksum mismatch"):
        D.verify_atr(root)


def test_download_atr_falls_back_to_parquet_endpoint(server, tmp_path):
    base, folder, _ = server
    files = _hf_site(folder, tree=False)
    urls = [f"{base}/datasets/{D.HF_REPO}/resolve/main/{rel}" for rel in files]
    (folder / "api" / "datasets" / D.HF_REPO / "parquet").write_text(json.dumps({"default": {"train": urls}}))
    root = tmp_path / "atr"
    D.download_atr(root, endpoint=base, progress=False)
    assert json.loads((root / "SOURCE.json").read_text())["listing"] == "parquet-api"
    assert len(ATR(root)) == 6 and len(D.read_sums(root / "SHA256SUMS")) == 2


def test_download_atr_offline_and_archive_instructions(tmp_path, capsys):
    with pytest.raises(QparseError, match="cannot download .*huggingface|cannot download"):
        D.download_atr(tmp_path / "a", endpoint=_closed_port_url(), progress=False)
    assert main(["data", "download", "atr", "--data-root", str(tmp_path / "b"), "--source", "archive"]) == 2
    err = capsys.readouterr().err
    assert D.ATR_ARCHIVE_URL in err and "humanparsing/JPEGImages" in err and "Traceback" not in err
    from test_datasets import make_atr_archive

    root = make_atr_archive(tmp_path / "c")
    assert D.download_atr(root, source="archive") == root
    info = D.verify_atr(root)
    assert info == {"layout": "archive", "images": 12, "chictopia": 2, "fashionista": 2, "atr": 8}


def test_cli_splits(tmp_path, capsys):
    from test_datasets import make_ccp

    root = make_ccp(tmp_path / "ccp", n=10)
    assert (
        main(["data", "splits", "--dataset", "ccp", "--data-root", str(root), "--out", str(tmp_path / "s")]) == 0
    )
    assert len((tmp_path / "s/train.txt").read_text().split()) == 8
    assert main(["data", "splits", "--dataset", "synthetic", "--n", "20", "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t/test.txt").read_text().split() == ["00018", "00019"]
    assert (
        main(
            [
                "data",
                "splits",
                "--dataset",
                "atr",
                "--data-root",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "u"),
            ]
        )
        == 2
    )
    assert "qparse data download --dataset atr" in capsys.readouterr().err
