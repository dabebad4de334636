"""`ftsvc files`: upload training data (a progress bar while the bytes go; the problems
validation found, as a table with their lines), list and show files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.filesize import decimal

from ftsvc.client.api import Api, endpoint
from ftsvc.client.errors import ApiError, ClientError
from ftsvc.client.options import ApiKey, BaseUrl, Json, Quiet, connect
from ftsvc.client.output import out, rows, table, transfer, when

app = typer.Typer(help="Training data: upload, list, show.", no_args_is_help=False)

FORMATS = ("auto", "chat", "sharegpt", "prompt_completion", "instruction", "qa", "text", "preference")


def upload(api: Api, path: Path, data_format: str = "auto", show_problems: bool = True) -> dict[str, Any]:
    """POST /files with the file's bytes, a progress bar following them. A file that
    fails validation prints its problems (stdout) before its error line."""
    try:
        source = path.open("rb")
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with source, transfer() as progress:
        total = path.stat().st_size
        reader = progress.wrap_file(source, total=total, description=f"uploading {path.name}")
        try:
            return dict(
                api.post(
                    "files",
                    files={"file": (path.name, reader)},
                    data={"purpose": "fine-tune", "format": data_format},
                )
            )
        except ApiError as failure:
            if show_problems and failure.code == "invalid_file" and failure.error.get("details"):
                out.print(problems_table(failure.error["details"]))
            raise


def problems_table(problems: list[dict[str, Any]]) -> Any:
    return rows(
        table("line", "example", "field", "problem"),
        ((p.get("line"), p.get("row"), p.get("field"), p.get("message")) for p in problems),
    )


def summary(file: dict[str, Any]) -> str:
    kind = f"{file['format']} ({file['file_type']})" if file.get("format") else "unreadable"
    return f"{file['id']}  {file['filename']}  {file['status']}: {kind}, {file['examples']} examples, " + decimal(
        file["bytes"]
    )


PathArgument = Annotated[
    Path,
    typer.Argument(
        metavar="PATH", help="JSONL, JSON array, CSV or Parquet", exists=True, dir_okay=False, show_default=False
    ),
]
FormatOption = Annotated[
    str, typer.Option("--format", help=f"The dataset format: {', '.join(FORMATS)}", show_default=True)
]


@app.command("upload")
def upload_command(
    path: PathArgument,
    data_format: FormatOption = "auto",
    quiet: Quiet = False,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Upload a training or validation file; it is validated before the answer."""
    with connect(base_url, api_key) as api:
        file = upload(api, path, data_format, show_problems=not as_json)
    show(file, quiet, as_json)


def show(file: dict[str, Any], quiet: bool, as_json: bool) -> None:
    if as_json:
        out.print_json(data=file)
    elif quiet:
        out.print(file["id"])
    else:
        out.print(summary(file))
        if file.get("problems"):
            out.print(problems_table(file["problems"]))


@app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 20,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The organization's files, newest first."""
    with connect(base_url, api_key) as api:
        page = api.get("files", limit=limit)
    if as_json:
        out.print_json(data=page)
        return
    columns = ("id", "filename", "status", "format", "examples", "size", "created")
    out.print(
        rows(
            table(*columns),
            (
                (
                    f["id"],
                    f["filename"],
                    f["status"],
                    f["format"],
                    f["examples"],
                    decimal(f["bytes"]),
                    when(f["created_at"]),
                )
                for f in page["data"]
            ),
        )
    )


@app.command("show")
def show_command(
    file_id: Annotated[str, typer.Argument(metavar="FILE_ID", show_default=False)],
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """One file, with the problems validation found in it."""
    with connect(base_url, api_key) as api:
        file = api.get(endpoint("files", file_id))
    show(file, quiet=False, as_json=as_json)
