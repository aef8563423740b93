"""Verified, resumable downloads of the real datasets.

CCP (:func:`download_ccp`): the upstream repository archive of commit :data:`CCP_COMMIT` is fetched
(resuming an interrupted ``.part`` file with an HTTP ``Range`` request), and only the files the kit reads
are extracted — ``photos/0001.jpg`` … ``1004.jpg``, ``annotations/pixel-level/*.mat``, ``label_list.mat``,
``LICENSE`` — each atomically and each checked against the SHA-256 list shipped with the kit
(``qparse_lite/data/ccp_sha256sums.txt``). A folder that already verifies is used as it is: no network
access and nothing is written into it (so a read-only mirror works offline).

ATR (:func:`download_atr`): ``source="parquet"`` fetches the Parquet files of the Hugging Face dataset
``mattmdjaga/human_parsing_dataset`` (names and SHA-256 from the Hub's tree API, the ``/parquet`` endpoint
as fallback) into ``ROOT/data/``, and records ``ROOT/SHA256SUMS`` and ``ROOT/SOURCE.json``;
``source="archive"`` checks for the Google Drive "humanparsing" archive (it cannot be fetched by a script)
and otherwise explains where to get it and where to put it.

Network failures raise :class:`~qparse_lite.errors.QparseError` with a one-line explanation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qparse_lite.data.datasets import CCP_COMMIT
from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["CCP_URL", "CCP_SUMS_FILE", "HF_REPO", "HF_ENDPOINT", "ATR_ARCHIVE_URL", "read_sums", "write_sums", "sha256_file", "check_tree", "verify_tree", "fetch", "extract_ccp", "download_ccp", "verify_ccp", "download_atr", "verify_atr"]  # fmt: skip

CCP_URL = f"https://github.com/bearpaw/clothing-co-parsing/archive/{CCP_COMMIT}.zip"
#: SHA-256 of every CCP file the kit reads (copied from the verified mirror; see data_scripts/).
CCP_SUMS_FILE = Path(__file__).resolve().parent / "ccp_sha256sums.txt"
HF_REPO = "mattmdjaga/human_parsing_dataset"
HF_ENDPOINT = "https://huggingface.co"
#: The "humanparsing" archive (link from the lemondan/HumanParsing-Dataset README).
ATR_ARCHIVE_URL = "https://drive.google.com/file/d/0B90uKgelnvatVS00SzNQSHREeWs/view?usp=sharing"
USER_AGENT = "qparse-lite (https://github.com/; dataset downloader)"
CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------------------


def read_sums(path: str | Path) -> dict[str, str]:
    """Parse a ``sha256sum`` listing (``HASH  ./relative/path`` per line) into ``{relative path: hash}``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise QparseError(f"{path}: checksum list not readable ({e}). Fix: reinstall qparse-lite.") from e
    sums: dict[str, str] = {}
    for k, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise QparseError(f"{path}:{k}: not a 'SHA256  path' line: {line!r}")
        rel = parts[1].lstrip("*")
        rel = rel[2:] if rel.startswith("./") else rel
        sums[rel] = parts[0].lower()
    return sums


def write_sums(path: str | Path, sums: Mapping[str, str]) -> Path:
    """Write ``{relative path: hash}`` as a ``sha256sum -c``-compatible listing (sorted), atomically."""
    return atomic_write_text(path, "".join(f"{h}  ./{p}\n" for p, h in sorted(sums.items())))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _bar(total: int | None, desc: str, progress: bool | None, unit: str = "B", initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000,
                initial=initial, mininterval=1.0, disable=None if progress is None else not progress)  # fmt: skip


def check_tree(
    root: str | Path, sums: Mapping[str, str], progress: bool | None = False
) -> list[tuple[str, str]]:
    """Problems of ``root`` against ``sums``: a list of ``(relative path, "missing" | "checksum mismatch")``."""
    root = Path(root)
    problems = []
    bar = _bar(len(sums), f"verify {root.name}", progress, unit="file")
    try:
        for rel in sorted(sums):
            f = root / rel
            if not f.is_file():
                problems.append((rel, "missing"))
            elif sha256_file(f) != sums[rel]:
                problems.append((rel, "checksum mismatch"))
            bar.update(1)
    finally:
        bar.close()
    return problems


def verify_tree(root: str | Path, sums: Mapping[str, str] | str | Path, *, fix: str | None = None,
                progress: bool | None = False) -> int:  # fmt: skip
    """Check every file listed in ``sums`` (a mapping or a ``sha256sum`` file) under ``root``.

    Returns the number of files verified; raises :class:`QparseError` naming the failing files and ``fix``.
    """
    root = Path(root)
    if not isinstance(sums, Mapping):
        sums = read_sums(sums)
    if not root.is_dir():
        raise QparseError(f"{root}: folder not found. Fix: {fix or 'download the dataset first'}")
    problems = check_tree(root, sums, progress)
    if problems:
        shown = "; ".join(f"{root / rel}: {why}" for rel, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise QparseError(
            f"{len(problems)} of {len(sums)} files fail verification: {shown}{more}. Fix: {fix or 'download again'}"
        )
    return len(sums)


# ---------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------


def _offline(url: str, e: BaseException, dest: Path | None = None) -> QparseError:
    reason = getattr(e, "reason", None) or e
    where = f", or fetch it on a connected machine and put it at {dest}" if dest is not None else ""
    return QparseError(
        f"cannot download {url} ({reason}). Fix: check the network connection or proxy (HTTPS_PROXY){where}"
    )


def _open(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - https/http URLs only


def _get_json(url: str, timeout: float = 60) -> Any:
    try:
        with _open(url, {"Accept": "application/json"}, timeout) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise _offline(url, e) from e


def fetch(url: str, dest: str | Path, *, sha256: str | None = None, size: int | None = None,
          progress: bool | None = None, timeout: float = 60) -> Path:  # fmt: skip
    """Download ``url`` to ``dest``, resumably and atomically.

    Bytes go to ``dest + ".part"``; when that file exists already (an interrupted download) the request
    asks for the rest with ``Range: bytes=<have>-`` and appends on ``206 Partial Content`` (a server that
    answers ``200`` instead restarts the file). When complete the ``.part`` is checked (``size``, ``sha256``
    when given) and renamed onto ``dest``. An existing ``dest`` is kept when it matches ``sha256`` (or when no
    hash is given). A checksum mismatch deletes the ``.part`` and raises naming the file.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = _open(url, headers, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part already holds everything
            resp = None
        else:
            raise QparseError(
                f"cannot download {url}: HTTP {e.code} {e.reason}. Fix: check the URL / try again later"
            ) from e
    except (urllib.error.URLError, OSError) as e:
        raise _offline(url, e, dest) from e
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            if have and status == 206:
                cr = resp.headers.get("Content-Range", "")
                if cr and not cr.replace(" ", "").startswith(f"bytes{have}-"):
                    raise QparseError(
                        f"{url}: server resumed at the wrong offset ({cr}); delete {part} and retry"
                    )
                mode = "ab"
            else:
                mode, have = "wb", 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else size
            try:
                with open(part, mode) as f, _bar(total, dest.name, progress, initial=have) as bar:
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        bar.update(len(block))
                    f.flush()
                    os.fsync(f.fileno())
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                raise QparseError(
                    f"download of {url} interrupted ({e}); {part} keeps what arrived. Fix: run the same command "
                    "again to resume"
                ) from e
            if total is not None and part.stat().st_size < total:
                raise QparseError(
                    f"download of {url} incomplete ({part.stat().st_size} of {total} bytes in {part}). "
                    "Fix: run the same command again to resume"
                )
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink(missing_ok=True)
        raise QparseError(
            f"{dest}: downloaded {got} bytes, expected {size}; the partial file was removed. Fix: run again"
        )
    if sha256 is not None and sha256_file(part) != sha256.lower():
        part.unlink(missing_ok=True)
        raise QparseError(
            f"{dest}: SHA-256 mismatch after download from {url}; the file was removed. Fix: run again"
        )
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------------------------------------
# CCP
# ---------------------------------------------------------------------------------------------------------


def _ccp_fix(root: Path) -> str:
    return f"qparse data download --dataset ccp --data-root {root}"


def extract_ccp(archive: str | Path, root: str | Path, sums: Mapping[str, str], *, skip: set[str] | None = None,
                progress: bool | None = None) -> int:  # fmt: skip
    """Extract the files listed in ``sums`` from the upstream archive into ``root``.

    Archive members are matched after dropping their first path component (``clothing-co-parsing-<sha>/``).
    Each file is streamed to a temporary file, hashed, and renamed into place only when its SHA-256
    matches; a mismatch raises naming the file (and leaves no partial file). ``skip``: paths already
    verified. Returns the number of files written.
    """
    archive, root = Path(archive), Path(root)
    skip = skip or set()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        archive.unlink(missing_ok=True)
        raise QparseError(
            f"{archive}: not a readable zip archive ({e}); it was removed. Fix: {_ccp_fix(root)}"
        ) from e
    written = 0
    with zf:
        members = {}
        for info in zf.infolist():
            if info.is_dir():
                continue
            parts = info.filename.split("/", 1)
            if len(parts) == 2:
                members[parts[1]] = info
        todo = [rel for rel in sorted(sums) if rel not in skip]
        missing = [rel for rel in todo if rel not in members]
        if missing:
            raise QparseError(
                f"{archive}: lacks {len(missing)} expected file(s), e.g. {missing[0]} — not the archive of commit "
                f"{CCP_COMMIT[:7]}? Fix: delete {archive} and run {_ccp_fix(root)}"
            )
        with _bar(len(todo), "extract", progress, unit="file") as bar:
            for rel in todo:
                target = root / rel
                h = hashlib.sha256()
                try:
                    with atomic_path(target) as tmp, zf.open(members[rel]) as src, open(tmp, "wb") as dst:
                        for block in iter(lambda src=src: src.read(CHUNK), b""):
                            h.update(block)
                            dst.write(block)
                        if h.hexdigest() != sums[rel]:
                            raise QparseError(
                                f"{target}: SHA-256 {h.hexdigest()[:16]}… differs from the shipped list "
                                f"({sums[rel][:16]}…); not written. Fix: delete {archive} and run {_ccp_fix(root)}"
                            )
                except (zipfile.BadZipFile, OSError) as e:
                    raise QparseError(
                        f"{archive}: cannot extract {rel} ({e}). Fix: delete it and run {_ccp_fix(root)}"
                    ) from e
                written += 1
                bar.update(1)
    return written


def download_ccp(root: str | Path, *, url: str = CCP_URL, sums: Mapping[str, str] | str | Path | None = None,
                 keep_archive: bool = False, progress: bool | None = None) -> Path:  # fmt: skip
    """Get the pixel-annotated part of Clothing Co-Parsing (commit :data:`CCP_COMMIT`) into ``root``.

    1. If every listed file under ``root`` already matches its SHA-256: return ``root`` (no network, no
       writes).
    2. Otherwise fetch the repository archive (resumable) to ``root/.download/``, extract the listed files
       that are missing or wrong (each verified before it is renamed into place), verify the whole tree,
       and delete the archive unless ``keep_archive``.
    """
    root = Path(root)
    sums = read_sums(CCP_SUMS_FILE if sums is None else sums) if not isinstance(sums, Mapping) else sums
    if root.is_dir():
        problems = check_tree(root, sums, progress=False)
        if not problems:
            return root
        good = set(sums) - {rel for rel, _ in problems}
    else:
        good = set()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".qparse-write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise QparseError(
            f"{root}: cannot write here ({e}) and it does not hold a verified CCP copy. Fix: choose another --data-root"
        ) from e
    dl = root / ".download"
    archive = dl / f"clothing-co-parsing-{CCP_COMMIT}.zip"
    fetch(url, archive, progress=progress)
    extract_ccp(archive, root, sums, skip=good, progress=progress)
    verify_tree(root, sums, fix=_ccp_fix(root), progress=progress)
    if not keep_archive:
        archive.unlink(missing_ok=True)
        if dl.is_dir() and not any(dl.iterdir()):
            shutil.rmtree(dl, ignore_errors=True)
    return root


def verify_ccp(root: str | Path, progress: bool | None = None) -> int:
    """Verify a CCP folder against the shipped SHA-256 list; returns the number of files checked."""
    root = Path(root)
    if not (root / "label_list.mat").is_file() and not (root / "photos").is_dir():
        raise QparseError(f"{root}: no CCP dataset here. Fix: {_ccp_fix(root)}")
    return verify_tree(root, read_sums(CCP_SUMS_FILE), fix=_ccp_fix(root), progress=progress)


# ---------------------------------------------------------------------------------------------------------
# ATR
# ---------------------------------------------------------------------------------------------------------


def _archive_instructions(root: Path) -> str:
    return (
        f"the ATR 'humanparsing' archive is on Google Drive and cannot be fetched by a script: open "
        f"{ATR_ARCHIVE_URL} (link from the lemondan/HumanParsing-Dataset README) in a browser, download it, and "
        f"extract it so that {root}/humanparsing/JPEGImages/*.jpg and {root}/humanparsing/SegmentationClassAug/*.png "
        f"exist; then run `qparse data verify --dataset atr --data-root {root}`. Or use the Parquet export: "
        f"qparse data download --dataset atr --data-root {root} --source parquet"
    )


def _hf_files(repo: str, revision: str, endpoint: str) -> tuple[list[dict[str, Any]], str]:
    """Parquet files of the dataset: ``[{path, url, size, sha256}]`` and how they were found."""
    tree = f"{endpoint}/api/datasets/{repo}/tree/{revision}/data"
    try:
        items = _get_json(tree)
        files = [
            {
                "path": it["path"],
                "url": f"{endpoint}/datasets/{repo}/resolve/{revision}/{it['path']}",
                "size": (it.get("lfs") or {}).get("size", it.get("size")),
                "sha256": (it.get("lfs") or {}).get("oid") or (it.get("lfs") or {}).get("sha256"),
            }
            for it in items
            if it.get("type") == "file" and str(it.get("path", "")).endswith(".parquet")
        ]
        if files:
            return files, "tree"
    except urllib.error.HTTPError:
        pass
    api = f"{endpoint}/api/datasets/{repo}/parquet"
    try:
        listing = _get_json(api)
    except urllib.error.HTTPError as e:
        raise QparseError(
            f"cannot list the Parquet files of {repo}: HTTP {e.code} at {tree} and {api}. Fix: try again later"
        ) from e
    urls: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str) and x.endswith(".parquet"):
            urls.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(listing)
    if not urls:
        raise QparseError(
            f"{api}: no Parquet files listed for {repo}. Fix: check the dataset page on the Hub"
        )
    files = []
    for k, u in enumerate(sorted(urls)):
        parts = u.rstrip("/").split("/")
        name = f"{parts[-3]}-{parts[-2]}-{parts[-1]}" if len(parts) >= 3 else f"{k:05d}.parquet"
        files.append({"path": f"data/{name}", "url": u, "size": None, "sha256": None})
    return files, "parquet-api"


def download_atr(root: str | Path, source: str = "parquet", *, repo: str = HF_REPO, revision: str = "main",
                 endpoint: str = HF_ENDPOINT, progress: bool | None = None) -> Path:  # fmt: skip
    """Get ATR into ``root``.

    ``source="parquet"``: download the Parquet files of ``repo`` (default ``mattmdjaga/human_parsing_dataset``)
    into ``root/data/`` (resumable; checked against the Hub's SHA-256 when the tree API gives it), then write
    ``root/SHA256SUMS`` and ``root/SOURCE.json``. Files already present and matching are not fetched again.
    ``source="archive"``: the Google Drive archive must be fetched by hand; returns ``root`` when its layout
    is present, else raises :class:`QparseError` with the instructions.
    """
    root = Path(root)
    if source == "archive":
        base = next((d for d in (root / "humanparsing", root) if (d / "JPEGImages").is_dir()), None)
        if base is None or not (base / "SegmentationClassAug").is_dir():
            raise QparseError(
                f"{root}: no humanparsing archive here. To get it: {_archive_instructions(root)}"
            )
        return root
    if source != "parquet":
        raise QparseError(f"--source {source!r}: choose parquet or archive")
    sums_path = root / "SHA256SUMS"
    if (
        sums_path.is_file()
        and (root / "SOURCE.json").is_file()
        and not check_tree(root, read_sums(sums_path))
    ):
        return root
    files, how = _hf_files(repo, revision, endpoint)
    sums: dict[str, str] = {}
    for f in files:
        dest = root / f["path"]
        fetch(f["url"], dest, sha256=f["sha256"], size=f["size"], progress=progress)
        sums[f["path"]] = f["sha256"] or sha256_file(dest)
    write_sums(sums_path, sums)
    atomic_write_json(root / "SOURCE.json", {
        "repo": repo, "revision": revision, "listing": how, "files": files,
        "checksums": "from the Hub (LFS sha256)" if how == "tree" else "computed locally after download (the listing gave none)",
        "downloaded": datetime.now(UTC).isoformat(timespec="seconds"),
    })  # fmt: skip
    return root


def verify_atr(root: str | Path, progress: bool | None = None) -> dict[str, Any]:
    """Check an ATR folder: the recorded SHA-256 list for the Parquet export, the image/label pairing for
    the archive. Returns a summary (layout, counts); raises :class:`QparseError` naming problems."""
    root = Path(root)
    fix = f"qparse data download --dataset atr --data-root {root}"
    if (root / "SHA256SUMS").is_file():
        n = verify_tree(root, read_sums(root / "SHA256SUMS"), fix=fix, progress=progress)
        return {"layout": "parquet", "files": n}
    base = next((d for d in (root / "humanparsing", root) if (d / "JPEGImages").is_dir()), None)
    if base is None or not (base / "SegmentationClassAug").is_dir():
        if any(root.rglob("*.parquet")) if root.is_dir() else False:
            return {
                "layout": "parquet",
                "files": len(list(root.rglob("*.parquet"))),
                "note": "no SHA256SUMS to check against",
            }
        raise QparseError(f"{root}: no ATR data (archive layout or Parquet files). Fix: {fix}")
    imgs = {p.stem for p in (base / "JPEGImages").glob("*.jpg")}
    labs = {p.stem for p in (base / "SegmentationClassAug").glob("*.png")}
    if not imgs:
        raise QparseError(
            f"{base / 'JPEGImages'}: no .jpg images. To get them: {_archive_instructions(root)}"
        )
    no_lab = sorted(imgs - labs)
    if no_lab:
        raise QparseError(
            f"{base / 'JPEGImages' / (no_lab[0] + '.jpg')}: no label PNG in {base / 'SegmentationClassAug'} "
            f"({len(no_lab)} image(s) without labels). Fix: extract the archive again"
        )
    chic = sum(1 for s in imgs if s.startswith("dataset10k_"))
    fash = sum(1 for s in imgs if s.startswith("fash_"))
    return {
        "layout": "archive",
        "images": len(imgs),
        "chictopia": chic,
        "fashionista": fash,
        "atr": len(imgs) - chic - fash,
    }
