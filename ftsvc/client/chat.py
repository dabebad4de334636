"""`ftsvc chat MODEL`: talk to a base model or one of the organization's fine-tuned
models through the API's chat completions, each reply printed as it streams. With
`-m TEXT`, one message and its reply; without, a conversation (each reply is part of
the next request) until an empty line, `exit` or Ctrl-D."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from httpx_sse import EventSource

from ftsvc.client.api import Api
from ftsvc.client.errors import ClientError
from ftsvc.client.options import ApiKey, BaseUrl, connect

DONE = "[DONE]"
PROMPT = "> "


def reply(api: Api, body: dict[str, Any]) -> str:
    """Stream the reply to stdout as it comes; returns it whole."""
    text: list[str] = []
    with api.stream("chat/completions", method="POST", json=body | {"stream": True}) as response:
        for event in EventSource(response).iter_sse():
            if event.data == DONE:
                break
            chunk = json.loads(event.data)
            if "error" in chunk:  # a failure after the stream began
                raise ClientError(f"the reply broke off: {chunk['error'].get('message')}")
            for choice in chunk["choices"]:
                piece = choice["delta"].get("content") or ""
                sys.stdout.write(piece)
                sys.stdout.flush()
                text.append(piece)
    sys.stdout.write("\n")
    return "".join(text)


def chat_command(
    model: Annotated[str, typer.Argument(help="A base model, or a fine-tuned model's name (ft:...)")],
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Send this one message, print the reply, exit")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message first")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="At most this many tokens a reply")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="0: greedy (default: 1)")] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Chat with a model: one message (-m) or a conversation (type an empty line or exit to leave)."""
    options = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature}.items() if v is not None}
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    with connect(base_url, api_key) as api:
        if message is not None:
            reply(api, {"model": model, "messages": [*messages, {"role": "user", "content": message}]} | options)
            return
        while True:
            try:
                said = input(PROMPT)
            except EOFError:
                return
            if said.strip() in ("", "exit"):
                return
            messages.append({"role": "user", "content": said})
            messages.append(
                {"role": "assistant", "content": reply(api, {"model": model, "messages": messages} | options)}
            )
