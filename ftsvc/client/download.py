"""`ftsvc download`: a job's adapter, or a checkpoint's, saved with a progress bar and
checked against the sha256 the server sends with it (`X-Artifact-SHA256`). The bytes go
to `<name>.part` first; only a download whose digest matches takes the final name, and
one that does not (or that breaks off) is removed.

`fetch` takes any API path that answers an archive with that header: merged models
(`/v1/models/{id}/merge`, under construction) are one more path for it."""

from __future__ import annotations

import hashlib
import os
from email.message import Message
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.filesize import decimal

from ftsvc.client.api import Api, endpoint
from ftsvc.client.errors import ClientError
from ftsvc.client.jobs import JobId
from ftsvc.client.options import ApiKey, BaseUrl, connect
from ftsvc.client.output import out, transfer

SHA256_HEADER = "X-Artifact-SHA256"


def attachment_name(response: httpx.Response, fallback: str) -> str:
    """The file name of Content-Disposition (`filename=` or RFC 2231's `filename*=`),
    without any directory part: the server names a file, never where it goes."""
    header = Message()
    header["Content-Disposition"] = response.headers.get("Content-Disposition", "")
    return Path(header.get_filename() or fallback).name or fallback


def destination(output: Path | None, name: str) -> Path:
    if output is None:
        return Path(name)
    return output / name if output.is_dir() else output


def fetch(api: Api, path: str, output: Path | None, force: bool) -> tuple[Path, str, int]:
    """Download `path` to `output` (a file, a directory, or None: the server's file name
    here); returns where it went, its sha256 and its size."""
    with api.stream(path) as response:
        expected = response.headers.get(SHA256_HEADER, "").lower()
        if not expected:
            raise ClientError(f"the server sent no {SHA256_HEADER} with {path}: the download cannot be checked")
        target = destination(output, attachment_name(response, f"{path.rsplit('/', 1)[-1]}.tar.gz"))
        if target.exists() and not force:
            raise ClientError(f"{target} already exists; pass --force to replace it")
        partial = target.with_name(f"{target.name}.part")
        length = response.headers.get("Content-Length")
        digest, received = hashlib.sha256(), 0
        try:
            with partial.open("wb") as sink, transfer() as progress:
                task = progress.add_task(f"downloading {target.name}", total=int(length) if length else None)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.advance(task, len(chunk))
            if digest.hexdigest() != expected:
                raise ClientError(
                    f"the download of {path} does not match its sha256: {SHA256_HEADER} says {expected}, the "
                    f"{received} bytes received hash to {digest.hexdigest()}; nothing was saved"
                )
            os.replace(partial, target)
        except OSError as exc:
            raise ClientError(f"cannot write {partial}: {exc.strerror or exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
    return target, expected, received


def download_command(
    job_id: JobId,
    checkpoint: Annotated[
        str | None,
        typer.Option(help="A checkpoint's id (ftckpt-..., see `ftsvc jobs checkpoints`) instead of the final adapter"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="A file or directory (default: the server's file name, here)"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing file")] = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Download a job's adapter (PEFT format, .tar.gz), checked against its sha256."""
    jobs = ("fine_tuning", "jobs", job_id)
    path = (
        endpoint(*jobs, "checkpoints", checkpoint, "adapter") if checkpoint else endpoint(*jobs, "artifacts", "adapter")
    )
    with connect(base_url, api_key) as api:
        target, sha256, received = fetch(api, path, output, force)
    out.print(f"saved {target} ({decimal(received)}), sha256 {sha256} verified")
