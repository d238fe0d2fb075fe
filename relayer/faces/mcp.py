"""The MCP tool server for AI agents: the protocol side of the trading tools of `relayer.faces.mcp_tools`.

Every failure comes back as an MCP tool error whose text is the REST error body (`RelayerError.envelope()`:
`{"error": {"code", "message", "details"}}`), so an agent reads the same stable codes a REST client does: a
refused argument is `invalid_field` naming it, a call without a key is `unauthenticated`. Arguments are taken
exactly as the tool's schema declares them: an unknown name is refused (a REST spelling such as `sizeDelta`
must not be dropped, leaving a close of everything), and so is a value of another JSON type. Incoming messages
are held to the exact JSON rules first (`refusal_of`, on stdio here and over HTTP in
`relayer.faces.api.middleware`): a key given twice is refused, not read as its last value.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from io import TextIOWrapper
from typing import Any, cast

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.message import SessionMessage
from mcp.shared.subscriptions import ResourceUpdated
from mcp.types import (
    CallToolResult,
    InputRequiredResult,
    JSONRPCError,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)
from pydantic import ConfigDict, ValidationError

from relayer import __version__
from relayer.domain.jsonio import loads_exact, reject_unknown_fields
from relayer.errors import InvalidFieldError, RelayerError
from relayer.faces.mcp_fills import RecentFills
from relayer.faces.mcp_tools import API_KEY, INSTRUCTIONS, TradingProvider, error_result, trading_tools

log = logging.getLogger("relayer.mcp")

SERVER_NAME = "vault-relayer"

_JSON_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
}


def build_mcp_server(trading: TradingProvider, *, fills: RecentFills | None = None) -> MCPServer:
    """An MCP server exposing the trading tools over `trading()` (serve it on stdio or mount it over HTTP);
    with `fills` (a stdio session's API key: `relayer.faces.mcp_fills`) also the recent-fills resource, which
    a client may subscribe to."""
    return _RelayerMCPServer(trading_tools(trading), fills)


# --- arguments ----------------------------------------------------------------------------------------------


class _ExactArguments(FuncMetadata):
    """A tool's argument model that takes the arguments as sent: strict JSON types, no unknown names, and no
    string re-read as JSON (the SDK's default would turn the string "null" into an absent argument)."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        return data


def _exact(tool: Tool) -> Tool:
    """`tool` with exact arguments, and a schema that says so (`additionalProperties: false`)."""
    loose = tool.fn_metadata
    model = cast(
        type[ArgModelBase],
        type(
            loose.arg_model.__name__,
            (loose.arg_model,),
            {"model_config": ConfigDict(strict=True, extra="forbid"), "__module__": __name__},
        ),
    )
    exact = _ExactArguments(
        arg_model=model,
        output_schema=loose.output_schema,
        output_model=loose.output_model,
        wrap_output=loose.wrap_output,
    )
    return tool.model_copy(
        update={"fn_metadata": exact, "parameters": model.model_json_schema(by_alias=True)}
    )


def _json_types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON types a property's schema admits, `null` left out (omitting the argument says that)."""
    if "anyOf" in schema:
        return [kind for option in schema["anyOf"] for kind in _json_types(option)]
    kind = schema.get("type")
    return [kind] if isinstance(kind, str) and kind != "null" else []


def _checked(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call to `tool`, checked against its schema before it runs.

    Raises:
        InvalidFieldError: an argument the tool does not have (listing the ones it has, exactly as REST
            refuses an unknown body field), a missing one, or one of another JSON type; `details.field` names
            it.
    """
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    reject_unknown_fields(arguments, tuple(properties))
    if API_KEY in properties and arguments.get(API_KEY) is None:
        arguments = {**arguments, API_KEY: ""}  # no key: the service's authentication answers 401
    try:
        tool.fn_metadata.validate_arguments(arguments)
    except ValidationError as exc:
        first = exc.errors()[0]
        raw = tuple(first["loc"])
        if first["type"] == "extra_forbidden" and len(raw) > 1:  # inside an object (top-level: above)
            inside = _argument_path(tool.parameters, raw[:-1])
            known = ", ".join(_object_of(_schema_at(tool.parameters, inside), tool.parameters))
            name = _path_name((*inside, raw[-1]))
            raise InvalidFieldError(name, f"is not a field of this request (fields: {known})") from None
        loc = _argument_path(tool.parameters, raw)
        name = _path_name(loc) if loc else "arguments"
        if first["type"] == "missing":
            raise InvalidFieldError(name, "is required") from None
        expected = " or ".join(
            _JSON_TYPE_NAMES.get(kind, kind) for kind in _json_types(_schema_at(tool.parameters, loc))
        )
        raise InvalidFieldError(name, f"must be {expected or 'another type'}") from None
    return arguments


def _argument_path(root: Mapping[str, Any], loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """`loc` of a validation error without pydantic's union member tags (`("size_delta", "str")` is the
    argument `size_delta`): only list indexes and names of the object's own properties stay."""
    if not loc:
        return loc
    path: tuple[int | str, ...] = (loc[0],)
    for part in loc[1:]:
        here = _schema_at(root, path)
        if isinstance(part, int):
            kept = any("items" in option for option in _options(here, root))
        else:
            kept = part in _object_of(here, root)
        if kept:
            path += (part,)
    return path


def _path_name(loc: tuple[int | str, ...]) -> str:
    """An argument's path as the service names a body field: `take_profits[1].exit_pct`."""
    name = str(loc[0])
    for part in loc[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _schema_at(root: Mapping[str, Any], loc: tuple[int | str, ...]) -> Mapping[str, Any]:
    """The schema of the value at `loc` in a tool's arguments (through `$ref`, `anyOf`, arrays, objects)."""
    node: Mapping[str, Any] = root
    for part in loc:
        if isinstance(part, int):
            node = next((o.get("items", {}) for o in _options(node, root) if "items" in o), {})
        else:
            node = next((_object_of(o, root).get(part, {}) for o in _options(node, root)), {})
    return {"anyOf": _options(node, root)}


def _options(node: Mapping[str, Any], root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The alternatives a schema admits, each with its `$ref` resolved."""
    options = node.get("anyOf", [node])
    return [_resolved(option, root) for option in options]


def _resolved(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found: Mapping[str, Any] = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        return found
    return node


def _object_of(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """The properties of the object a schema admits (none: not an object)."""
    for option in _options(node, root):
        if isinstance(option.get("properties"), dict):
            return dict(option["properties"])
    return {}


class _RelayerMCPServer(MCPServer):
    """An MCP server whose every tool call answers a failure with the REST error body.

    Arguments are checked here, before the SDK's own validation (the same exact model, so it cannot then
    refuse them in its own words); a crash in a tool answers `internal_error`, as REST does.
    """

    def __init__(self, tools: list[Tool], fills: RecentFills | None = None) -> None:
        exact = [_exact(tool) for tool in tools]
        self._bus = InMemorySubscriptionBus()
        lifespan: Any = None
        if fills is not None:

            def lifespan(_: MCPServer[Any]) -> AbstractAsyncContextManager[dict[str, Any]]:
                return _watching(fills, self._publish)

        super().__init__(
            name=SERVER_NAME,
            version=__version__,
            instructions=INSTRUCTIONS,
            tools=exact,
            resources=None if fills is None else [fills.resource()],
            lifespan=lifespan,
            subscriptions=self._bus,
        )
        if fills is not None:  # sessions of before 2026-07-28 subscribe this way (later ones: listen)
            lowlevel = self._lowlevel_server
            lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, fills.subscribe)
            lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, fills.unsubscribe)

    async def _publish(self, uri: str) -> None:
        """Tell `subscriptions/listen` streams that `uri` changed."""
        await self._bus.publish(ResourceUpdated(uri=uri))

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        try:
            if tool is None:
                names = ", ".join(t.name for t in self._tool_manager.list_tools())
                raise InvalidFieldError("name", f"is not a tool of this server (tools: {names})")
            checked = _checked(tool, arguments)
        except RelayerError as error:
            return error_result(error)
        try:
            return await super().call_tool(name, checked, context)
        except UnexpectedToolError:
            log.exception("mcp tool=%s failed unexpectedly", name)
            return error_result(RelayerError("internal error; see the server log"))

    async def run_stdio_async(self) -> None:
        """Serve on stdin/stdout as the SDK does, with every incoming line held to the exact JSON rules first
        (`refusal_of`): the SDK's parser keeps the last of two equal keys, so `"dry_run": true, "dry_run":
        false` would otherwise run a real trade. A refused line is answered with the JSON-RPC error on the
        same output; the rest pass on untouched. stdout stays the SDK's (stray prints go to stderr)."""
        stdin = TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        lines = _ExactLines(anyio.wrap_file(stdin))
        async with stdio_server(stdin=cast(anyio.AsyncFile[str], lines)) as (read_stream, write_stream):
            lines.answer_to(write_stream)
            lowlevel = self._lowlevel_server  # as `MCPServer.run_stdio_async` runs it
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


@asynccontextmanager
async def _watching(fills: RecentFills, publish: Any) -> AsyncIterator[dict[str, Any]]:
    """The server's lifespan with the fills resource: its watcher runs as long as the server does."""
    async with fills.watching(publish):
        yield {}


# --- messages the SDK would read its own way ----------------------------------------------------------------

PARSE_ERROR = -32700
"""JSON-RPC's code for a message that could not be read (here: not under our exact JSON rules)."""


def refusal_of(message: str | bytes) -> dict[str, Any] | None:
    """The JSON-RPC error answering an incoming MCP message that `relayer.domain.jsonio.loads_exact` refuses
    (a key given twice, NaN, nesting past the limit, not JSON), or None when the message may pass to the SDK.

    `error.data` is the REST error body (`invalid_field` naming the key), so an agent reads the same code as
    everywhere. The request's `id` is answered when the message names one unambiguously (a repeated `id`
    cannot be trusted: then `null`, as JSON-RPC prescribes for an unreadable request).
    """
    try:
        loads_exact(message)
    except InvalidFieldError as error:
        return {
            "jsonrpc": "2.0",
            "id": None if error.field in {"id", "body"} else _request_id(message),
            "error": {"code": PARSE_ERROR, "message": error.message, "data": error.envelope()},
        }
    return None


def _request_id(message: str | bytes) -> str | int | None:
    """The `id` of a message that is JSON but for a repeated key elsewhere (read the lenient way)."""
    parsed = json.loads(message)
    request_id = parsed.get("id") if isinstance(parsed, dict) else None
    return request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None


class _ExactLines:
    """The lines of stdin for the SDK's stdio transport, minus those `refusal_of` refuses: each of those is
    answered on the transport's own write stream (so answers never interleave on stdout)."""

    def __init__(self, source: anyio.AsyncFile[str]) -> None:
        self._source = source
        self._answers: Any = None

    def answer_to(self, write_stream: Any) -> None:
        self._answers = write_stream

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self._source:
            refusal = None if not line.strip() else refusal_of(line)
            if refusal is None:
                yield line
            elif self._answers is not None:
                await self._answers.send(SessionMessage(JSONRPCError.model_validate(refusal)))
