"""Fetching one file from ``{base_url}/data/{file_id}`` to ``{out_dir}/{file_id}/{file_name}``:
resumed with ``Range`` after a cut, retried with backoff, renamed into place only with the
manifest's size and md5 (computed once and remembered), and a refusal (401/403/404, md5 wrong
every time) kept to that file with a reason saying what to do.

What the GDC documents and this relies on (gdc-docs, API Users Guide): ``data/{file_id}`` streams
one file and honours ``Range``; controlled files need the user's token in the ``X-Auth-Token``
header and answer 401/403 without a valid one.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import requests

from ..io import file_md5, write_text_atomic
from .auth import TOKEN_FILE_ENV, read_token, token_source
from .core import GDC_API, FileRefused, GDCError, UnsafeRecord, check_file_record, human

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read per streamed chunk


def _verified_record(final: Path) -> Path:
    return final.with_name(f".{final.name}.verified")


def is_verified(final: Path, size: int, md5: str, check_md5: bool) -> bool:
    """Whether a present file matches the manifest. Its md5 is computed once: a record beside it
    (size, mtime, md5) lets later runs trust an unchanged file without reading it again."""
    st = final.stat()
    if st.st_size != size:
        return False
    if not check_md5:
        return True
    record = _verified_record(final)
    try:
        seen = json.loads(record.read_text())
        if seen == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}:
            return True
    except (OSError, ValueError):
        pass
    if file_md5(final) != md5:
        return False
    _remember_verified(final, md5)
    return True


def _remember_verified(final: Path, md5: str) -> None:
    st = final.stat()
    try:
        write_text_atomic(_verified_record(final), json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                               "md5": md5}))
    except OSError as e:  # a read-only shared copy: verified again next time
        log.warning("%s: cannot record that it was verified (%s)", final, e.strerror)


class _Retry(Exception):
    """A failure worth another try (connection lost, 5xx, short body)."""


class _Progress:
    """Logs a download's bytes, rate and ETA at most every ``every_s`` seconds."""

    def __init__(self, file_id: str, size: int, every_s: float):
        self.file_id, self.size, self.every_s = file_id, size, every_s
        self.t0 = self.last = time.monotonic()
        self.received = 0

    def add(self, n: int, have: int) -> None:
        self.received += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.received / max(now - self.t0, 1e-6)
            eta = (self.size - have) / rate if rate > 0 else float("inf")
            log.info("%s: %s of %s (%.0f%%), %s/s, ETA %s", self.file_id, human(have), human(self.size),
                     100 * have / max(self.size, 1), human(rate), _duration(eta))


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _refusal(code: int, file_id: str, file_name: str, access: str, token: str | None,
             source: str | None) -> FileRefused:
    """What a 401/403/404 of one file means and what to do about it (never the token itself)."""
    what = f"file {file_id} ({file_name}, access: {access or 'unknown'})"
    if code == 404:
        reason = (f"HTTP 404: {what} is not in the GDC any more (removed, or given a new id in a data release); "
                  "query the cohort again for current ids")
    elif token is None:
        reason = (f"HTTP {code}: {what} needs a GDC token: download one from the GDC portal with an account that "
                  f"has dbGaP access to the project and name it in gdc.token_file or ${TOKEN_FILE_ENV}, or keep "
                  "to open data (gdc.access: [open])")
    else:
        reason = (f"HTTP {code}: {what}: the GDC refused the token from {source}: it may have expired (tokens last "
                  "30 days; download a new one from the portal) or the account lacks dbGaP access to this project")
    return FileRefused(reason, reason)


def _fetch_once(session: requests.Session, url: str, partial: Path, size: int, timeout: float,
                counts: dict[str, int], progress: _Progress, refuse) -> None:
    """One request appending to ``partial`` from its current length; adds to ``counts`` the bytes
    received and, for a ``Range`` request, the offset asked for (``resumed_from``, first one kept).
    ``refuse(code)`` builds the error of a 401/403/404."""
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > size:
        partial.unlink()
        offset = 0
    if offset == size:
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if offset and not counts.get("resumed_from"):
        counts["resumed_from"] = offset
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
            if r.status_code >= 500 or r.status_code == 429:
                raise _Retry(f"HTTP {r.status_code}")
            if r.status_code == 416:  # our partial does not fit the server's file: start over
                partial.unlink(missing_ok=True)
                raise _Retry("HTTP 416 (range not satisfiable)")
            if r.status_code in (401, 403, 404):
                raise refuse(r.status_code)
            if r.status_code not in (200, 206):
                raise GDCError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
            if r.status_code == 206:
                start = r.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                if start != str(offset):
                    raise GDCError(f"{url}: asked for bytes {offset}- but got Content-Range "
                                   f"{r.headers.get('Content-Range')!r}")
            else:
                offset = 0  # the server ignored the Range header: the body is the whole file
                counts["resumed_from"] = 0
            # keep the bytes of a body cut short (urllib3 would drop its buffer); the size check below
            # turns a short body into a retry that resumes after them
            r.raw.enforce_content_length = False
            have = offset
            with open(partial, "ab" if offset else "wb") as f:
                for block in r.iter_content(CHUNK):
                    f.write(block)
                    counts["bytes_received"] += len(block)
                    have += len(block)
                    progress.add(len(block), have)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from e
    if partial.stat().st_size < size:
        raise _Retry(f"connection closed after {partial.stat().st_size} of {size} bytes")


def download_file(file_id: str, file_name: str, md5: str, size: int, out_dir: str | os.PathLike,
                  base_url: str = GDC_API, retries: int = 5, backoff: float = 2.0, timeout: float = 120.0,
                  verify_present_md5: bool = True, token_file: str | os.PathLike | None = None,
                  access: str = "", progress_s: float = 30.0) -> dict:
    """Fetch one file to ``{out_dir}/{file_id}/{file_name}`` through ``{base_url}/data/{file_id}``.

    The body goes to ``<name>.partial``; a later try (or a later run) resumes it with
    ``Range: bytes=N-``. Only a file whose size (bytes) and md5 match the manifest is renamed to
    its final name. Connection errors, 5xx and short bodies are retried after ``backoff * 2**k``
    seconds; a wrong md5 discards the partial and starts over. A file already at its final name
    with the right size (and md5, unless ``verify_present_md5`` is off; computed once, see
    :func:`is_verified`) is left alone. The GDC token (:func:`read_token`) goes in the
    ``X-Auth-Token`` header. 401/403/404 and an md5 wrong after every try raise
    :class:`FileRefused`; progress (bytes, rate, ETA) is logged every ``progress_s`` seconds.
    Returns what happened.
    """
    check_file_record(file_id, file_name, "download")
    root = Path(out_dir).absolute()
    final = root / file_id / file_name
    if final.parent.parent != root:  # belt and braces: check_file_record keeps it so
        raise UnsafeRecord(f"file {file_id}: {final} is outside {root}; refused")
    partial = final.with_name(final.name + ".partial")
    t0 = time.monotonic()
    if final.exists():
        if is_verified(final, size, md5, verify_present_md5):
            return {"file_id": file_id, "file_name": file_name, "status": "already present",
                    "bytes_received": 0, "resumed_from": 0, "attempts": 0, "seconds": 0.0}
        log.warning("%s: %s exists but does not match the manifest; fetching it again", file_id, final)
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/data/{file_id}"
    token, source = read_token(token_file), token_source(token_file)
    counts, last_error, bad_md5 = {"bytes_received": 0, "resumed_from": 0}, "", None
    progress = _Progress(file_id, size, progress_s)

    def refuse(code: int) -> FileRefused:
        return _refusal(code, file_id, file_name, access, token, source)

    with requests.Session() as session:
        if token:
            session.headers["X-Auth-Token"] = token
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(session, url, partial, size, timeout, counts, progress, refuse)
            except _Retry as e:
                last_error, bad_md5 = str(e), None
                log.warning("%s: try %d of %d failed: %s", file_id, attempt + 1, retries + 1, e)
                continue
            actual = file_md5(partial)
            if actual == md5:
                os.replace(partial, final)
                _remember_verified(final, md5)
                seconds = time.monotonic() - t0
                log.info("%s: %s in %.1f s (%s/s)", file_id, human(size), seconds,
                         human(counts["bytes_received"] / max(seconds, 1e-6)))
                return {"file_id": file_id, "file_name": file_name,
                        "status": "resumed" if counts["resumed_from"] else "downloaded", **counts,
                        "attempts": attempt + 1, "seconds": round(seconds, 3)}
            bad_md5, last_error = actual, f"md5 {actual} but the manifest says {md5}"
            log.warning("%s: %s; starting over", file_id, last_error)
            partial.unlink()
    if bad_md5 is not None:
        reason = (f"md5 {bad_md5} does not match the manifest's {md5} after {retries + 1} tries; "
                  "partial download removed")
        raise FileRefused(f"file {file_id} ({file_name}): {reason}", reason)
    raise GDCError(f"file {file_id} ({file_name}): failed after {retries + 1} tries: {last_error}")
