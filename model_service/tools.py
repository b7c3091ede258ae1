"""Tool calling and structured outputs for chat: what the prompt says, what the grammar allows, and
how the model's text becomes OpenAI's ``tool_calls``.

``tool_choice`` modes:

- ``auto``: the model's own chat template renders the tools (``apply_chat_template(tools=...)``) and
  the answer is parsed per family (``tool_parsers``). A template that knows nothing of tools cannot
  teach the model a format to parse, so ``auto`` is a 400 for such models.
- ``required`` and a named function: the answer is constrained by grammar, so it always parses, even
  from a small model. ``required`` answers a JSON array of ``{"name", "arguments"}`` objects (one item
  when ``parallel_tool_calls`` is false); a named function answers its arguments object. A template
  without tools support gets the tools in the system prompt instead, in the generic form of
  :func:`generic_tool_prompt`, and earlier calls and results in the history as plain text.
- ``response_format`` json_object / json_schema: the content is constrained to (schema-valid) JSON.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from common.errors import InvalidRequestError
from common.protocol import ChatCompletionRequest, ChatMessage, FunctionCall, ToolCall
from model_service.engines.base import TextGenerator
from model_service.engines.constrained import json_schema_grammar
from model_service.tool_parsers import ParsedCall, parse_tool_calls

_NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class OutputPlan:
    """How one chat request's answer is shaped: its tool mode, the tools, and the grammar (or None)."""

    mode: str = "none"  # none | auto | required | named
    tools: list[dict[str, Any]] = field(default_factory=list)
    function: str | None = None  # the named function
    parallel: bool = True
    native: bool = False  # the chat template renders the tools itself
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None  # what ``grammar`` enforces

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}


def plan_output(req: ChatCompletionRequest, engine: TextGenerator, model: str) -> OutputPlan:
    """Check the request's tool and format fields against the engine and build the plan (400s here)."""
    mode = req.tool_mode()
    if req.tool_choice not in (None, "none") and not req.tools:
        raise InvalidRequestError("tool_choice needs tools: send the functions the model may call in 'tools'.",
                                  param="tool_choice", code="invalid_value")
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []] if mode != "none" else []
    function = req.tool_choice.function.name if mode == "named" else None  # type: ignore[union-attr]
    if function is not None and function not in {t["function"]["name"] for t in tools}:
        raise InvalidRequestError(f"tool_choice names the function '{function}', which is not among the tools.",
                                  param="tool_choice", code="invalid_value")
    native = bool(tools) and engine.template_takes_tools()
    if mode == "auto" and not native:
        raise InvalidRequestError(
            f"The chat template of '{model}' has no tool support, so the model cannot choose tools on its own "
            "(tool_choice 'auto'). Send tool_choice 'required' or a named function (answers are then "
            "constrained to the tools' schemas), or 'none'.", param="tool_choice", code="tools_not_supported")
    plan = OutputPlan(mode, tools, function, req.parallel_tool_calls is not False, native)
    schema, param = _schema(req, plan)
    if schema is None:
        return plan
    grammar = json_schema_grammar(schema, param)  # checked for every engine: one list of 400s
    if not engine.structured_outputs:
        param = "response_format" if plan.mode in ("none", "auto") else "tool_choice"
        raise InvalidRequestError(f"The {engine.name} engine serving '{model}' does not do constrained "
                                  f"decoding, which '{param}' needs here.", param=param, code="unsupported_parameter")
    return OutputPlan(mode, tools, function, plan.parallel, native, grammar, schema)


def _schema(req: ChatCompletionRequest, plan: OutputPlan) -> tuple[dict[str, Any] | None, str]:
    """The JSON Schema the answer is held to, and the request field it comes from."""
    fmt = req.response_format
    wants_json = fmt is not None and fmt.type != "text"
    if plan.mode == "auto" and wants_json:
        raise InvalidRequestError("response_format cannot be combined with tool_choice 'auto' here: a JSON "
                                  "answer would leave the model no way to call a tool.",
                                  param="response_format", code="invalid_value")
    if plan.mode == "named":
        return _parameters(plan.tools, plan.function), "tools"
    if plan.mode == "required":
        return calls_schema(plan.tools, plan.parallel), "tools"
    if fmt is None or fmt.type == "text":
        return None, "response_format"
    return (fmt.json_schema.schema_ if fmt.json_schema else {"type": "object"}), "response_format"


def _parameters(tools: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    fn = next(t["function"] for t in tools if t["function"]["name"] == name)
    return fn.get("parameters") or _NO_ARGUMENTS


def calls_schema(tools: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """A JSON array of calls, each naming one tool and carrying arguments valid for it."""
    one_of = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
               "properties": {"name": {"const": t["function"]["name"]},
                              "arguments": _parameters(tools, t["function"]["name"])}} for t in tools]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": one_of}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


# --- the prompt --------------------------------------------------------------------------------


def chat_messages(req: ChatCompletionRequest, plan: OutputPlan, native_history: bool) -> list[dict[str, Any]]:
    """Role/content dicts for the chat template; ``developer`` is the newer name of ``system``.

    With ``native_history`` (a template with tools support), assistant ``tool_calls`` (arguments as
    objects, as templates expect) and ``tool`` messages go to the template as they are; otherwise
    they become text the model can read, in the same form the generic tool prompt asks for."""
    names = {c.id: c.function.name for m in req.messages for c in m.tool_calls or []}
    out = [_message(m, names, native_history) for m in req.messages]
    if plan.tools and not plan.native:
        prompt = generic_tool_prompt(plan)
        if out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _message(m: ChatMessage, names: dict[str, str], native: bool) -> dict[str, Any]:
    role = "system" if m.role == "developer" else m.role
    msg: dict[str, Any] = {"role": role, "content": m.text()}
    if m.tool_calls:
        calls = [{"name": c.function.name, "arguments": _json_or_text(c.function.arguments)} for c in m.tool_calls]
        if native:
            msg["tool_calls"] = [{"id": c.id, "type": "function", "function": f}
                                 for c, f in zip(m.tool_calls, calls, strict=True)]
        else:
            msg["content"] = "\n".join(filter(None, [msg["content"], json.dumps(calls, ensure_ascii=False)]))
    if role == "tool":
        name = names.get(m.tool_call_id or "", m.name or "")
        if not native:
            return {"role": "user", "content": f"Result of the call to {name or 'a tool'}: {msg['content']}"}
        msg.update(tool_call_id=m.tool_call_id, name=name)
    return msg


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def generic_tool_prompt(plan: OutputPlan) -> str:
    """The tools in plain words for a template that cannot render them (documented in docs/openai-api.md)."""
    specs = json.dumps([{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                         "parameters": t["function"].get("parameters") or _NO_ARGUMENTS} for t in plan.tools],
                       ensure_ascii=False)
    if plan.mode == "named":
        how = f'Call the function "{plan.function}": answer only with its arguments as a JSON object.'
    else:
        how = 'Answer only with a JSON array of calls: [{"name": <function name>, "arguments": {...}}].'
    return f"You can call these functions (the JSON Schema of each one's arguments is given):\n{specs}\n{how}"


# --- the answer ---------------------------------------------------------------------------------


def tool_calls(plan: OutputPlan, text: str) -> tuple[str | None, list[ToolCall]]:
    """``(content, calls)`` of a finished answer; no calls: the text is the content as it is."""
    if plan.mode == "named":
        args = _json_or_text(text)
        parsed = [ParsedCall(plan.function or "", text)] if isinstance(args, dict) else []
        content = None if parsed else text
    elif plan.mode in ("required", "auto"):
        content, parsed = parse_tool_calls(text, plan.names)
        if not plan.parallel:
            parsed = parsed[:1]
    else:
        return text, []
    return content, [ToolCall(id=call_id(), function=FunctionCall(name=c.name, arguments=c.arguments))
                     for c in parsed]


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"
