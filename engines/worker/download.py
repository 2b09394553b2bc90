"""Fetching a model from a Hugging Face hub into this worker's models directory, with its progress in
the download's Redis record (engines/downloads.py).

Plain HTTP to the hub (httpx), not huggingface_hub's downloader: `./blaze` runs the workers with
HF_HUB_OFFLINE=1, which that downloader obeys. The hub is settings.HF_ENDPOINT (the public one or a
mirror), asked with settings.HF_TOKEN when it is set.

A download lists the revision's files and their sizes (`GET <hub>/api/models/<repo>/revision/<rev>`
with `blobs=true`), checks the disk has room for what is still missing, and fetches each file
(`GET <hub>/<repo>/resolve/<rev>/<file>`) into a staging folder, BLAZE_MODELS_DIR/.downloads/<repo>@<rev>/
(hidden: the catalog skips it): it streams into `<file>.part` and goes on from the part's length with a
Range header, after a dropped connection (retried), a worker restart (`resume`), or a failed download asked
for again. Once every file is whole the folder is renamed, in one step, to BLAZE_MODELS_DIR/<name>, where
the worker's catalog lists it. Progress is saved at most every PROGRESS_SECONDS, and the cancel flag read
as often. When a revision has safetensors weights, its other weight formats (.bin, .h5, .msgpack, …) are
left out, as vLLM and TGI load them.
"""

import errno
import hashlib
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx
import redis
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from engines import downloads
from engines.downloads import DownloadRecord

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.25  # the record's progress is saved (and the cancel flag read) at most this often
RATE_WINDOW_SECONDS = 5.0  # the rate is taken over this much of the recent past
CHUNK_BYTES = 1 << 16
ATTEMPTS = 5  # tries of a hub request whose connection fails or that is answered 5xx (or 429)
STAGING = ".downloads"
# Other formats of the same weights: left out when the revision has .safetensors files.
OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".tflite", ".onnx", ".onnx_data")

_running: set[str] = set()  # the downloads this process is fetching
_running_lock = threading.Lock()


class DownloadFailed(Exception):
    """Why a download cannot finish, in words an operator can act on. `resumable`: the files fetched so
    far are kept, and downloading the same revision again goes on from them."""

    def __init__(self, message: str, *, resumable: bool = False) -> None:
        super().__init__(message)
        self.resumable = resumable


class Cancelled(Exception):
    """The download's cancel flag is set."""


class HubUnavailable(Exception):
    """The hub answered 5xx or 429, or a file ended short: worth another try."""


@dataclass(frozen=True)
class HubFile:
    path: str  # inside the repository, "/"-separated
    size: int | None  # None: the hub did not say
    sha256: str | None  # an LFS file's, which the hub lists


@dataclass(frozen=True)
class Hub:
    """One revision of a repository on a hub, as this worker asks for it."""

    endpoint: str
    token: str
    repo: str
    revision: str
    worker: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def info_url(self) -> str:
        return f"{self.endpoint}/api/models/{self.repo}/revision/{quote(self.revision, safe='')}"

    def file_url(self, path: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{quote(self.revision, safe='')}/{quote(path)}"

    def token_hint(self) -> str:
        return f"set HF_TOKEN on worker {self.worker} to a token of an account that may read it"

    def gated(self) -> DownloadFailed:
        if not self.token:
            return DownloadFailed(f"{self.repo} is gated on {self.endpoint}: it needs a token. Accept its "
                                  f"conditions on its page there, then {self.token_hint()}.")
        return DownloadFailed(f"{self.repo} is gated on {self.endpoint} and the token in HF_TOKEN on worker "
                              f"{self.worker} has no access to it: accept its conditions on its page there with "
                              "the token's account.")

    def refusal(self, response: httpx.Response, path: str | None = None) -> DownloadFailed | HubUnavailable:
        """What a hub's answer other than 2xx means (`path`: the file asked for, None for the file
        list). The hub says why in X-Error-Code, as huggingface_hub reads it; without a token it
        answers 401 rather than 404 for a repository it does not show."""
        status, code = response.status_code, response.headers.get("X-Error-Code", "")
        if status >= 500 or status == 429:
            return HubUnavailable(f"{self.endpoint} answered {status}")
        if code == "GatedRepo":
            return self.gated()
        if code == "RevisionNotFound":
            return DownloadFailed(f"{self.repo} has no revision {self.revision} on {self.endpoint}.")
        if code == "EntryNotFound" or (status == 404 and path is not None):
            return DownloadFailed(f"{self.repo} on {self.endpoint} has no file {path} at revision {self.revision}.")
        if code == "RepoNotFound" or status == 404 or (status == 401 and path is None):
            private = "" if self.token else f" (or it is private: {self.token_hint()})"
            return DownloadFailed(f"No repository {self.repo} on {self.endpoint}{private}.")
        if status in (401, 403):
            return DownloadFailed(f"{self.endpoint} refused {self.repo} ({status}): {self.token_hint()}.")
        return DownloadFailed(f"{self.endpoint} answered {status} for {response.request.url}.")


class Progress:
    """A running download's counts, rate and ETA, in its record: saved at most every PROGRESS_SECONDS,
    each save reading the cancel flag (Cancelled, once set). Redis away skips a save: the download goes on."""

    def __init__(self, record: DownloadRecord) -> None:
        self.record = record
        self._samples: deque[tuple[float, int]] = deque()  # (when, bytes done) at each save
        self._saved_at = 0.0

    def advance(self, count: int) -> None:
        self.record["bytes_done"] += count
        if time.monotonic() - self._saved_at >= PROGRESS_SECONDS:
            self.save()

    def save(self) -> None:
        now, done = time.monotonic(), self.record["bytes_done"]
        self._samples.append((now, done))
        while now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        since, then = self._samples[0]
        rate = max(0.0, (done - then) / (now - since)) if now > since else 0.0
        total = self.record["bytes_total"]
        self.record["rate"] = rate
        self.record["eta"] = max(0, total - done) / rate if rate > 0 and total is not None else None
        self._saved_at = now
        try:
            downloads.save(self.record)
            cancelled = downloads.cancel_requested(self.record["id"])
        except redis.RedisError as exc:
            log.warning("could not save the progress of download %s: %s", self.record["id"], exc)
            return
        if cancelled:
            raise Cancelled


def start(download_id: str, hostname: str, on_done: Callable[[], object]) -> bool:
    """Fetch the download in a thread of its own, unless this process already fetches it; whether it
    started. `on_done` runs once the model is in place (the worker publishes its catalog)."""
    with _running_lock:
        if download_id in _running:
            return False
        _running.add(download_id)

    def fetch() -> None:
        try:
            run(download_id, hostname, on_done)
        finally:
            with _running_lock:
                _running.discard(download_id)

    threading.Thread(target=fetch, name=f"download-{download_id[:8]}", daemon=True).start()
    return True


def resume(hostname: str, on_done: Callable[[], object]) -> list[str]:
    """Start again the downloads this worker had queued or running when it stopped (each goes on from
    the bytes on its disk); their ids."""
    try:
        mine = [record["id"] for record in downloads.records()
                if record["worker"] == hostname and record["state"] in downloads.ACTIVE]
    except redis.RedisError as exc:
        log.warning("could not look for model downloads to resume: %s", exc)
        return []
    started = [download_id for download_id in mine if start(download_id, hostname, on_done)]
    if started:
        log.info("resuming %d model download(s): %s", len(started), ", ".join(started))
    return started


def run(download_id: str, hostname: str, on_done: Callable[[], object] = lambda: None) -> DownloadRecord | None:
    """Fetch the download to its end, here and now: its record then says done, failed (and why) or
    cancelled, and is returned (None: no such download)."""
    record = downloads.get(download_id)
    if record is None or record["state"] not in downloads.ACTIVE:
        return record
    models_dir = Path(settings.BLAZE_MODELS_DIR)
    target = models_dir / record["repo"].rsplit("/", 1)[-1]
    staging = models_dir / STAGING / f"{record['repo']}@{record['revision']}".replace("/", "--")
    record.update({"state": "running", "endpoint": settings.HF_ENDPOINT, "target": str(target), "error": "",
                   "started_at": record["started_at"] or time.time()})
    progress = Progress(record)
    try:
        progress.save()
        _fetch(Hub(settings.HF_ENDPOINT, settings.HF_TOKEN, record["repo"], record["revision"], hostname),
               staging, target, progress)
        record["state"] = "done"
    except Cancelled:
        shutil.rmtree(staging, ignore_errors=True)
        record["state"] = "cancelled"
    except DownloadFailed as exc:
        if not exc.resumable:
            shutil.rmtree(staging, ignore_errors=True)
        record["state"], record["error"] = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the record must end and say it
        log.exception("download %s of %s failed", download_id, record["repo"])
        record["state"], record["error"] = "failed", f"The download failed on worker {hostname}: {exc}"
    record["finished_at"], record["rate"], record["eta"] = time.time(), 0.0, None
    # Through a Redis blip: a record left running would be fetched again when the worker restarts.
    Retrying(retry=retry_if_exception_type(redis.RedisError), stop=stop_after_attempt(ATTEMPTS),
             wait=wait_exponential_jitter(initial=1, max=10), reraise=True)(downloads.save, record)
    log.info("download %s of %s@%s: %s", download_id, record["repo"], record["revision"],
             f"{record['state']} ({record['error']})" if record["error"] else record["state"])
    if record["state"] == "done":
        try:
            on_done()
        except Exception:
            log.exception("after download %s", download_id)
    return record


def _fetch(hub: Hub, staging: Path, target: Path, progress: Progress) -> None:
    record = progress.record
    if target.exists():
        raise DownloadFailed(f"{target} already exists on worker {hub.worker}: remove or rename it, then "
                             "download again.")
    with httpx.Client(timeout=httpx.Timeout(30, connect=10), follow_redirects=True) as client:
        try:
            files = _retried(partial(_list_files, client, hub))
            staging.mkdir(parents=True, exist_ok=True)
            on_disk = {file.path: _bytes_on_disk(staging, file) for file in files}
            sizes = [file.size for file in files]
            record["bytes_total"] = None if None in sizes else sum(size or 0 for size in sizes)
            record["files_total"] = len(files)
            record["bytes_done"] = sum(on_disk.values())
            record["files_done"] = sum((staging / file.path).is_file() for file in files)
            _check_room(hub, staging, sum(max(0, (file.size or 0) - on_disk[file.path]) for file in files))
            progress.save()
            for file in files:
                if not (staging / file.path).is_file():
                    _retried(partial(_fetch_file, client, hub, file, staging, progress))
                    record["files_done"] += 1
        except (httpx.TransportError, HubUnavailable) as exc:
            raise DownloadFailed(f"{hub.endpoint} could not be reached ({str(exc) or type(exc).__name__}) in "
                                 f"{ATTEMPTS} tries: download it again to go on from the "
                                 f"{filesizeformat(record['bytes_done'])} fetched.", resumable=True) from exc
    progress.save()
    try:
        staging.rename(target)  # one step: the catalog never sees half a model
    except OSError as exc:
        raise DownloadFailed(f"The model could not be moved into place at {target}: {exc.strerror or exc}.",
                             resumable=True) from exc


def _retried(call: Callable[[], Any]) -> Any:
    """`call()`, tried again with backoff when the hub cannot be reached or is unavailable (each try of a
    file goes on from its part)."""
    retrying = Retrying(retry=retry_if_exception_type((httpx.TransportError, HubUnavailable)),
                        stop=stop_after_attempt(ATTEMPTS), wait=wait_exponential_jitter(initial=1, max=30),
                        reraise=True)
    return retrying(call)


def _list_files(client: httpx.Client, hub: Hub) -> list[HubFile]:
    response = client.get(hub.info_url(), params={"blobs": "true"}, headers=hub.headers())
    if response.status_code != 200:
        raise hub.refusal(response)
    try:
        info = response.json()
    except ValueError as exc:
        raise DownloadFailed(f"{hub.endpoint} answered {hub.info_url()} with something other than JSON: is "
                             "HF_ENDPOINT a Hugging Face hub?") from exc
    if info.get("gated") and not hub.token:  # the hub lists a gated repository's files to anyone
        raise hub.gated()
    files = []
    for sibling in info.get("siblings") or []:
        lfs = sibling.get("lfs") or {}
        size = sibling.get("size", lfs.get("size"))
        files.append(HubFile(_inside(sibling["rfilename"]), size if isinstance(size, int) else None,
                             lfs.get("sha256")))
    if any(file.path.endswith(".safetensors") for file in files):
        files = [file for file in files if not file.path.endswith(OTHER_WEIGHTS)]
    if not files:
        raise DownloadFailed(f"{hub.repo} has no files at revision {hub.revision} on {hub.endpoint}.")
    return files


def _inside(name: str) -> str:
    """A file name the hub listed, if it is a path inside the model's folder."""
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or "\\" in name or any(part in ("..", ".") for part in parts):
        raise DownloadFailed(f"The hub listed a file named {name!r}, which is not a path inside a model folder.")
    return name


def _bytes_on_disk(staging: Path, file: HubFile) -> int:
    """What a file already has in the staging folder: all of it, or its part's length."""
    whole, part = staging / file.path, _part(staging / file.path)
    if whole.is_file():
        return whole.stat().st_size
    return part.stat().st_size if part.is_file() else 0


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _check_room(hub: Hub, staging: Path, needed: int) -> None:
    free = shutil.disk_usage(staging).free
    if needed > free:
        raise _disk_full(hub, staging, needed, free)


def _disk_full(hub: Hub, staging: Path, needed: int | None, free: int) -> DownloadFailed:
    needs = f"needs {filesizeformat(needed)} more" if needed is not None else "needs more"
    return DownloadFailed(f"The worker's disk is full: {hub.repo} {needs} under {staging.parent.parent} on worker "
                          f"{hub.worker}, which has {filesizeformat(free)} free.")


def _fetch_file(client: httpx.Client, hub: Hub, file: HubFile, staging: Path, progress: Progress) -> None:
    """Fetch one file into its part, going on from the part's length, then give it its name."""
    path = staging / file.path
    part = _part(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if file.size is not None and offset > file.size:  # not this file's beginning: fetch it whole
        progress.advance(-offset)
        offset = 0
    if file.size is None or offset < file.size:
        headers = {**hub.headers(), **({"Range": f"bytes={offset}-"} if offset else {})}
        with client.stream("GET", hub.file_url(file.path), headers=headers) as response:
            if response.status_code == 200 and offset:  # the hub sent it all: start the part again
                progress.advance(-offset)
                offset = 0
            elif response.status_code == 206 and not response.headers.get("Content-Range", "").startswith(
                    f"bytes {offset}-"):
                raise DownloadFailed(f"{hub.endpoint} answered a range of {file.path} other than the one asked for "
                                     f"({response.headers.get('Content-Range')}).", resumable=True)
            elif response.status_code not in (200, 206, 416):
                raise hub.refusal(response, file.path)
            if response.status_code != 416:  # 416: nothing past the part's length, which _finish checks
                _stream_into(part, response, offset, hub, staging, progress)
    _finish(part, path, file, hub, progress)


def _stream_into(part: Path, response: httpx.Response, offset: int, hub: Hub, staging: Path,
                 progress: Progress) -> None:
    try:
        with part.open("ab" if offset else "wb") as out:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                out.write(chunk)
                progress.advance(len(chunk))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        record = progress.record
        left = record["bytes_total"] - record["bytes_done"] if record["bytes_total"] is not None else None
        raise _disk_full(hub, staging, left, shutil.disk_usage(staging).free) from exc


def _finish(part: Path, path: Path, file: HubFile, hub: Hub, progress: Progress) -> None:
    """The part, whole and as the hub says it is, under the file's own name."""
    size = part.stat().st_size if part.is_file() else 0
    if file.size is not None and size < file.size:
        raise HubUnavailable(f"{file.path} ended after {size} of its {file.size} bytes")
    if (file.size is not None and size > file.size) or (file.sha256 and _sha256(part) != file.sha256):
        part.unlink(missing_ok=True)
        progress.advance(-size)
        raise DownloadFailed(f"{file.path} arrived damaged (its size or SHA-256 is not what {hub.endpoint} "
                             "lists): download it again.")
    os.replace(part, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
