"""A local Slack: the Web API methods the bot uses, plus a user who types and clicks.

``SlackEmulator`` is an HTTP server answering like Slack's Web API (``/api/<method>``) for
``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``, ``views.open``,
``usergroups.users.list``, file uploads as ``files_upload_v2`` makes them
(``files.getUploadURLExternal``, the bytes POSTed to the upload URL it gave, then
``files.completeUploadExternal`` sharing the file in a channel as a message with ``files``) and
``response_url`` posts (``/response/<channel>/<user>/<n>``), and ``apps.connections.open`` for
Socket Mode (``SlackEmulator(socket_mode=True)``; the WebSocket side is
``sandbox/slack_socket.py``). It
records every call, keeps the visible messages per channel (updates replace in place), checks
the bot token, and answers ``429`` with ``Retry-After`` when a test asks it to
(``POST /_sandbox/rate_limit``); ``POST /_sandbox/revoke {"revoked": true}`` revokes the bot
token (every call answers ``token_revoked``, as Slack does) until ``{"revoked": false}``.

``SlackUser`` plays a person in a workspace: it sends signed slash commands and button clicks
to the bot's ``/slack/events`` the way Slack does (form-encoded commands, ``payload=`` JSON
interactions, ``X-Slack-Signature`` over ``v0:{timestamp}:{body}``), and reads back what the
bot showed that person. ``invoke sandbox.slack`` and ``invoke sandbox.click`` use it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from sandbox.local_http import JsonHandler, LocalServer, QuietServer

if TYPE_CHECKING:
    from sandbox.slack_socket import Ack, SocketModeHub

SANDBOX_BOT_TOKEN = "xoxb-sandbox-bot-token"  # noqa: S105 - a fake token for the local emulator
SANDBOX_SIGNING_SECRET = "sandbox-signing-secret"  # noqa: S105
TEAM_ID = "T0SANDBOX"
BOT_USER_ID = "U0RUNBOOKBOT"


@dataclass
class Message:
    """A message as a person in the workspace would see it."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    ephemeral_to: str | None = None  # visible to this user only
    response_url: str | None = None  # posted through this response_url (ephemeral replies)
    updates: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)  # shared files (id, title, ...)

    def to_doc(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "ts": self.ts,
            "text": self.text,
            "blocks": self.blocks,
            "thread_ts": self.thread_ts,
            "ephemeral_to": self.ephemeral_to,
            "response_url": self.response_url,
            "updates": self.updates,
            "files": self.files,
        }


@dataclass
class SlackState:
    token: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    rate_limits: dict[str, list[float]] = field(default_factory=dict)  # method -> Retry-After
    #: The bot token was revoked: every call answers ``token_revoked``.
    revoked: bool = False
    #: Files by id: what getUploadURLExternal announced and the bytes uploaded.
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_url: str = ""
    #: Socket Mode's WebSocket side (``SlackEmulator(socket_mode=True)``).
    socket_hub: SocketModeHub | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def find(self, channel: str, ts: str) -> Message | None:
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        return None


def _blocks(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value) if value else []
    return list(value or [])


class _Handler(JsonHandler):
    server: _Server
    content_type = "application/json; charset=utf-8"

    def _read(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if "json" in (self.headers.get("Content-Type") or ""):
            return dict(json.loads(raw or "{}"))
        return {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}

    def _send_bytes(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.server.state
        path = urllib.parse.urlparse(self.path).path
        with state.lock:
            if path == "/_sandbox/calls":
                self._send(200, state.calls)
            elif path.startswith("/_sandbox/files/"):
                found = state.files.get(path.removeprefix("/_sandbox/files/"))
                if found is None or "data" not in found:
                    self._send(404, {"ok": False, "error": "file_not_found"})
                else:
                    self._send_bytes(200, found["data"])
            elif path == "/_sandbox/messages":
                self._send(200, [m.to_doc() for m in state.messages])
            else:
                self._send(404, {"ok": False, "error": "unknown_method"})

    def do_POST(self) -> None:
        path = urllib.parse.urlparse(self.path).path
        state = self.server.state
        if path.startswith("/_sandbox/"):
            self._sandbox(path, self._read())
            return
        if path.startswith("/upload/"):
            self._upload(path.removeprefix("/upload/"))
            return
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        args = {**{k: v[-1] for k, v in query.items()}, **self._read()}
        if path.startswith("/response/"):
            self._response_url(path, args)
            return
        method = path.removeprefix("/api/")
        with state.lock:
            state.calls.append({"method": method, "args": args, "at": time.time()})
            pending = state.rate_limits.get(method) or state.rate_limits.get("*")
            if pending:
                retry_after = pending.pop(0)
                self._send(
                    429,
                    {"ok": False, "error": "ratelimited"},
                    {"Retry-After": str(int(retry_after))},
                )
                return
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ").strip() or args.get("token", "")
            if method == "apps.connections.open":
                self._send(200, self._connections_open(state, token))
                return
            if token != state.token:
                self._send(200, {"ok": False, "error": "invalid_auth"})
                return
            if state.revoked:
                self._send(200, {"ok": False, "error": "token_revoked"})
                return
            self._send(200, self._api(state, method, args))

    def _connections_open(self, state: SlackState, token: str) -> dict[str, Any]:
        """Socket Mode: the app-level token gets a one-time WebSocket URL of the hub."""
        from sandbox.slack_socket import SANDBOX_APP_TOKEN

        if not token.startswith("xapp-"):
            return {"ok": False, "error": "not_allowed_token_type"}
        if token != SANDBOX_APP_TOKEN or state.socket_hub is None:
            return {"ok": False, "error": "invalid_auth"}
        return {"ok": True, "url": state.socket_hub.open_url()}

    def _api(self, state: SlackState, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": "B0BOT"}
        if method == "chat.postMessage":
            if not args.get("channel"):
                return {"ok": False, "error": "channel_not_found"}
            message = Message(
                channel=args["channel"],
                ts=state.next_ts(),
                text=args.get("text", ""),
                blocks=_blocks(args.get("blocks")),
                thread_ts=args.get("thread_ts"),
            )
            state.messages.append(message)
            return {"ok": True, "channel": message.channel, "ts": message.ts}
        if method == "chat.update":
            found = state.find(args.get("channel", ""), args.get("ts", ""))
            if found is None:
                return {"ok": False, "error": "message_not_found"}
            found.text = args.get("text", found.text)
            found.blocks = _blocks(args.get("blocks"))
            found.updates += 1
            return {"ok": True, "channel": found.channel, "ts": found.ts}
        if method == "chat.postEphemeral":
            message = Message(
                channel=args.get("channel", ""),
                ts=state.next_ts(),
                text=args.get("text", ""),
                blocks=_blocks(args.get("blocks")),
                ephemeral_to=args.get("user"),
            )
            state.messages.append(message)
            return {"ok": True, "message_ts": message.ts}
        if method == "views.open":
            view = args.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            return {"ok": True, "view": {"id": f"V{len(state.calls):06d}", **(view or {})}}
        if method == "usergroups.users.list":
            users = state.usergroups.get(args.get("usergroup", ""))
            if users is None:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": users}
        if method.startswith("files."):
            return self._files(state, method, args)
        return {"ok": False, "error": "unknown_method"}

    def _files(self, state: SlackState, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "files.getUploadURLExternal":
            if not args.get("filename") or not str(args.get("length", "")).isdigit():
                return {"ok": False, "error": "invalid_arguments"}
            file_id = f"F{len(state.files) + 1:08d}"
            state.files[file_id] = {
                "id": file_id,
                "name": args["filename"],
                "length": int(args["length"]),
                "alt_txt": args.get("alt_txt"),
            }
            return {
                "ok": True,
                "file_id": file_id,
                "upload_url": f"{state.base_url}/upload/{file_id}",
            }
        if method == "files.completeUploadExternal":
            try:
                wanted = json.loads(args.get("files") or "[]")
            except json.JSONDecodeError:
                return {"ok": False, "error": "invalid_arguments"}
            shared = []
            for item in wanted:
                found = state.files.get(str(item.get("id")))
                if found is None or "data" not in found:
                    return {"ok": False, "error": "file_not_found"}
                found["title"] = item.get("title") or found["name"]
                shared.append({k: v for k, v in found.items() if k != "data"})
            channel = args.get("channel_id")
            if channel:
                state.messages.append(
                    Message(
                        channel=channel,
                        ts=state.next_ts(),
                        text=args.get("initial_comment") or "",
                        blocks=[],
                        thread_ts=args.get("thread_ts"),
                        files=shared,
                    )
                )
            return {"ok": True, "files": shared}
        return {"ok": False, "error": "unknown_method"}

    def _upload(self, file_id: str) -> None:
        """The upload URL: the file's bytes, exactly the announced length."""
        state = self.server.state
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with state.lock:
            found = state.files.get(file_id)
            state.calls.append(
                {"method": "upload", "args": {"file_id": file_id}, "at": time.time()}
            )
            if found is None:
                self._send(404, {"ok": False, "error": "file_not_found"})
                return
            if len(data) != found["length"]:
                self._send(400, {"ok": False, "error": f"expected {found['length']} bytes"})
                return
            found["data"] = data
        self._send(200, {"ok": True})

    def _response_url(self, path: str, args: dict[str, Any]) -> None:
        """``/response/<channel>/<user>/<n>``: ephemeral replies to one person."""
        state = self.server.state
        parts = path.split("/")
        channel, user = parts[2], parts[3]
        url = path
        with state.lock:
            state.calls.append({"method": "response_url", "url": url, "args": args})
            previous = [m for m in state.messages if m.response_url == url]
            if args.get("delete_original"):
                for message in previous:
                    state.messages.remove(message)
            elif args.get("replace_original") and previous:
                message = previous[-1]
                message.text = args.get("text", "")
                message.blocks = _blocks(args.get("blocks"))
                message.updates += 1
            else:
                state.messages.append(
                    Message(
                        channel=channel,
                        ts=state.next_ts(),
                        text=args.get("text", ""),
                        blocks=_blocks(args.get("blocks")),
                        ephemeral_to=None if args.get("response_type") == "in_channel" else user,
                        response_url=url,
                    )
                )
        self._send(200, {"ok": True})

    def _sandbox(self, path: str, doc: dict[str, Any]) -> None:
        state = self.server.state
        with state.lock:
            if path == "/_sandbox/rate_limit":
                method = doc.get("method", "*")
                count = int(doc.get("count", 1))
                state.rate_limits[method] = [float(doc.get("retry_after", 1))] * count
            elif path == "/_sandbox/revoke":
                state.revoked = bool(doc.get("revoked", True))
            elif path == "/_sandbox/usergroup":
                state.usergroups[doc["id"]] = list(doc["users"])
            elif path == "/_sandbox/reset":
                state.calls.clear()
                state.messages.clear()
                state.rate_limits.clear()
                state.files.clear()
                state.revoked = False
            else:
                self._send(404, {"ok": False, "error": f"no sandbox hook {path}"})
                return
        self._send(200, {"ok": True})


class _Server(QuietServer):
    state: SlackState


class SlackEmulator(LocalServer[_Server]):
    """The local Slack Web API on 127.0.0.1 (a free port unless given)."""

    def __init__(
        self, *, token: str = SANDBOX_BOT_TOKEN, port: int = 0, socket_mode: bool = False
    ) -> None:
        server = _Server(("127.0.0.1", port), _Handler)
        server.state = SlackState(token=token)
        super().__init__(server)
        server.state.base_url = self.url
        if socket_mode:
            from sandbox.slack_socket import SocketModeHub

            self.server.state.socket_hub = SocketModeHub()

    @property
    def hub(self) -> SocketModeHub:
        """Socket Mode's side of the emulator (started with ``socket_mode=True``)."""
        if self.state.socket_hub is None:
            raise AssertionError("this emulator was started without socket_mode=True")
        return self.state.socket_hub

    @property
    def state(self) -> SlackState:
        return self.server.state

    @property
    def api_url(self) -> str:
        """What ``WebClient(base_url=...)`` needs (the trailing slash matters)."""
        return self.url + "/api/"

    def start(self) -> Self:
        super().start()
        if self.state.socket_hub is not None:
            self.state.socket_hub.start()
        return self

    def stop(self) -> None:
        if self.state.socket_hub is not None:
            self.state.socket_hub.stop()
        super().stop()

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(c) for c in self.state.calls if method is None or c["method"] == method]


# --- the person in the workspace ------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + HMAC-SHA256 over ``v0:{timestamp}:{body}``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _http_json(method: str, url: str, doc: Any = None, timeout: float = 10) -> Any:
    data = None if doc is None else json.dumps(doc).encode()
    request = urllib.request.Request(  # noqa: S310 - local URLs only
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


@dataclass
class Delivery:
    """What the bot answered over HTTP to one signed request."""

    status: int
    body: str


def _is_user_id(channel: str) -> bool:
    """Direct messages are posted to the user's id (U... or W...)."""
    return channel[:1] in {"U", "W"}


def text_of(message: dict[str, Any]) -> str:
    """A message rendered as plain text: sections, context and the buttons' labels."""
    lines: list[str] = []
    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            lines.append(f"== {block['text']['text']} ==")
        elif kind == "section":
            if block.get("text"):
                lines.append(block["text"]["text"])
            for item in block.get("fields") or []:
                lines.append(item["text"])
        elif kind == "context":
            lines.append(" ".join(e.get("text", "") for e in block.get("elements", [])))
        elif kind == "divider":
            lines.append("---")
        elif kind == "actions":
            labels = [e["text"]["text"] for e in block["elements"] if e.get("type") == "button"]
            lines.append("[" + "] [".join(labels) + "]")
    return "\n".join(lines) if lines else message.get("text", "")


def buttons_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element.get("type") == "button":
                    found.append({**element, "block_id": block.get("block_id", "")})
    return found


@dataclass(frozen=True)
class Candidate:
    """A card with the button someone wants to press."""

    message: dict[str, Any]
    button: dict[str, Any]
    execution_id: str | None

    def describe(self) -> str:
        title = next((line for line in text_of(self.message).splitlines() if line.strip()), "")
        which = self.execution_id or "no execution yet"
        return f"{which} in #{self.message['channel']}: {title.strip('= ')[:80]}"


class AmbiguousButton(LookupError):
    """Several cards (or none of those named) have the button; the message lists them."""

    def __init__(self, problem: str, candidates: list[Candidate], label: str) -> None:
        lines = [f"  card {n}: {c.describe()}" for n, c in enumerate(candidates, start=1)]
        super().__init__(
            "\n".join(
                [
                    f"{problem}; choose one with --execution ID or --card N:",
                    *lines,
                ]
            )
        )
        self.candidates = candidates


class SlackUser:
    """Somebody in the sandbox workspace, talking to the bot through the emulator."""

    def __init__(
        self,
        user_id: str,
        *,
        bot_url: str,
        slack_url: str,
        signing_secret: str = SANDBOX_SIGNING_SECRET,
        user_name: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.user_name = user_name or user_id.lower()
        self.bot_url = bot_url.rstrip("/")
        self.slack_url = slack_url.rstrip("/")
        self.signing_secret = signing_secret
        self._n = itertools.count(1)

    # requests -------------------------------------------------------------------------------
    def post(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Delivery:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or sign(self.signing_secret, ts, body),
        }
        request = urllib.request.Request(  # noqa: S310 - local URLs only
            self.bot_url + "/slack/events", data=body, method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return Delivery(response.status, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Delivery(exc.code, exc.read().decode())

    def response_url(self, channel: str) -> str:
        return f"{self.slack_url}/response/{channel}/{self.user_id}/{next(self._n)}"

    def command_body(self, text: str, *, channel: str) -> bytes:
        return urllib.parse.urlencode(self.command_form(text, channel=channel)).encode()

    def command_form(self, text: str, *, channel: str) -> dict[str, str]:
        """A slash command's fields, as Slack posts them (and sends them over Socket Mode)."""
        command, _, rest = text.strip().partition(" ")
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "sandbox",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": self.user_id,
            "user_name": self.user_name,
            "command": command,
            "text": rest.strip(),
            "api_app_id": "A0RUNBOOK",
            "response_url": self.response_url(channel),
            "trigger_id": f"trigger.{self.user_id}.{time.time_ns()}",
        }

    def command(self, text: str, *, channel: str = "C0OPS") -> Delivery:
        """Type ``/command args`` in a channel."""
        return self.post(
            self.command_body(text, channel=channel), "application/x-www-form-urlencoded"
        )

    def interaction(self, payload: dict[str, Any]) -> Delivery:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return self.post(body, "application/x-www-form-urlencoded")

    def click_payload(self, message: dict[str, Any], button: dict[str, Any]) -> dict[str, Any]:
        channel = message["channel"]
        return {
            "type": "block_actions",
            "team": {"id": TEAM_ID, "domain": "sandbox"},
            "user": {"id": self.user_id, "username": self.user_name, "team_id": TEAM_ID},
            "api_app_id": "A0RUNBOOK",
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": channel,
                "is_ephemeral": bool(message.get("ephemeral_to")),
            },
            "trigger_id": f"trigger.{self.user_id}.{time.time_ns()}",
            "channel": {"id": channel, "name": channel.lower()},
            "message": {"ts": message["ts"], "text": message["text"], "blocks": message["blocks"]},
            "response_url": (
                self.slack_url + message["response_url"]
                if message.get("response_url")
                else self.response_url(channel)
            ),
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": button["block_id"],
                    "text": button["text"],
                    "value": button.get("value", ""),
                    "action_ts": str(time.time()),
                }
            ],
        }

    def view_submission(self, view: dict[str, Any], values: dict[str, str]) -> Delivery:
        """Submit a modal the bot opened, filling plain-text inputs by block id."""
        state = {
            block["block_id"]: {
                block["element"]["action_id"]: {
                    "type": "plain_text_input",
                    "value": values.get(block["block_id"], ""),
                }
            }
            for block in view.get("blocks", [])
            if block.get("type") == "input"
        }
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "sandbox"},
            "user": {"id": self.user_id, "username": self.user_name, "team_id": TEAM_ID},
            "api_app_id": "A0RUNBOOK",
            "token": "legacy-verification-token",
            "trigger_id": f"trigger.{self.user_id}.{time.time_ns()}",
            "view": {**view, "state": {"values": state}},
        }
        return self.interaction(payload)

    # reading back ----------------------------------------------------------------------------
    def visible(self) -> list[dict[str, Any]]:
        """Every message this person can see, oldest first."""
        messages: list[dict[str, Any]] = _http_json("GET", self.slack_url + "/_sandbox/messages")
        return [
            m
            for m in messages
            if m["ephemeral_to"] in (None, self.user_id)
            and (not _is_user_id(m["channel"]) or m["channel"] == self.user_id)
        ]

    def find_button(self, label: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The newest visible message with a button labelled ``label`` (case-insensitive)."""
        for message in reversed(self.visible()):
            for button in buttons_of(message):
                if button["text"]["text"].lower() == label.lower():
                    return message, button
        return None

    def pick(
        self, label: str, *, execution: str | None = None, card: int | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The button labelled ``label`` a person means: on the card of ``execution``, or the
        ``card``-th of the candidates (newest first), or the only card that has one.

        Raises LookupError when there is none, and :class:`AmbiguousButton` (listing the
        candidates) when several cards have one and neither says which.
        """
        candidates = self.candidates(label)
        if not candidates:
            raise LookupError(f"no message visible to {self.user_id} has a {label!r} button")
        if execution is not None:
            chosen = [c for c in candidates if c.execution_id == execution]
            if not chosen:
                raise AmbiguousButton(
                    f"no {label!r} button on a card of {execution}", candidates, label
                )
            return chosen[0].message, chosen[0].button
        if card is not None:
            if not 1 <= card <= len(candidates):
                raise AmbiguousButton(
                    f"there is no card {card} with a {label!r} button", candidates, label
                )
            return candidates[card - 1].message, candidates[card - 1].button
        if len(candidates) > 1:
            raise AmbiguousButton(
                f"{len(candidates)} cards have a {label!r} button", candidates, label
            )
        return candidates[0].message, candidates[0].button

    def candidates(self, label: str) -> list[Candidate]:
        """The cards with a ``label`` button, newest first, one per execution (a card's own
        message when it has no execution yet, like a plan's Confirm)."""
        found: list[Candidate] = []
        seen: set[str] = set()
        for message in reversed(self.visible()):
            for button in buttons_of(message):
                if button["text"]["text"].lower() != label.lower():
                    continue
                value = str(button.get("value", ""))
                execution = value.split(":", 1)[0] if value.startswith("rb-") else None
                key = execution or f"{message['channel']}/{message['ts']}"
                if key not in seen:
                    seen.add(key)
                    found.append(Candidate(message, button, execution))
                break
        return found

    def click(self, label: str) -> Delivery:
        """Press the newest ``label`` button (tests; people choose with :meth:`pick`)."""
        found = self.find_button(label)
        if found is None:
            raise LookupError(f"no message visible to {self.user_id} has a {label!r} button")
        message, button = found
        return self.interaction(self.click_payload(message, button))

    # over Socket Mode -----------------------------------------------------------------------
    def socket_command(
        self, hub: SocketModeHub, text: str, *, channel: str = "C0OPS", to: int | None = None
    ) -> Ack:
        """Type ``/command args``; Slack delivers it over one app connection. The app's ack."""
        form = self.command_form(text, channel=channel)
        return hub.ack(hub.deliver("slash_commands", form, to=to))

    def socket_click(self, hub: SocketModeHub, label: str, *, to: int | None = None) -> Ack:
        found = self.find_button(label)
        if found is None:
            raise LookupError(f"no message visible to {self.user_id} has a {label!r} button")
        message, button = found
        return hub.ack(hub.deliver("interactive", self.click_payload(message, button), to=to))

    def last_view(self) -> dict[str, Any] | None:
        """The newest modal the bot opened for this person (views.open by trigger id)."""
        calls: list[dict[str, Any]] = _http_json("GET", self.slack_url + "/_sandbox/calls")
        for call in reversed(calls):
            if call["method"] == "views.open" and self.user_id in call["args"].get(
                "trigger_id", ""
            ):
                view = call["args"]["view"]
                return dict(json.loads(view) if isinstance(view, str) else view)
        return None
