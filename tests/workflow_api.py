"""Read ComfyUI UI-format (litegraph) workflows against node schemas, and convert them to API prompts.

A UI workflow stores each node's widget values as a positional list (``widgets_values``) in the order the
frontend creates the widgets: the widget inputs of ``input_order["required"]``, then of ``input_order["optional"]``,
with extra values after an input that has ``control_after_generate`` (a seed: "fixed", "randomize", ...; a combo
also gets the control's filter text) and after a combo with a file upload button (``image_upload`` or
``video_upload``: the button's value, "image"; ``audio_upload``: two nulls, for the player and the button).
Mapping those values to input names therefore needs the node's ``/object_info`` entry; this module does
that, and :func:`ui_to_api` builds the ``{"<id>": {"class_type", "inputs", "_meta"}}`` prompt that ``POST /prompt``
takes, as the frontend's ``graphToPrompt`` does: notes are dropped, muted nodes are left out, bypassed nodes are
wired around (an input of the same type passes through), Reroute nodes are followed and PrimitiveNode values are
inlined.

``schemas`` everywhere is a mapping node type -> ``/object_info`` entry (a snapshot, a live server's answer, or
:func:`object_info_from_schema` of a V3 schema object). Nothing here imports ComfyUI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
NOTE_NODES = frozenset({"Note", "MarkdownNote"})  # frontend-only, never sent to the server
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"  # frontend-only, resolved away by graphToPrompt
FRONTEND_ONLY_NODES = NOTE_NODES | {REROUTE, PRIMITIVE}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})  # last: combos
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})  # the frontend adds the control widget for these by name
MODE_NORMAL, MODE_MUTED, MODE_BYPASSED = 0, 2, 4


class WorkflowError(ValueError):
    """A workflow that does not fit its node schemas (names the node and what was expected)."""


@dataclass(frozen=True)
class InputSpec:
    """One input of an ``/object_info`` entry, normalised: V1 combos (a list as type) become type COMBO."""

    name: str
    section: str  # "required" or "optional"
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None  # combo options

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        if self.type not in ("INT", "COMBO"):
            return False
        flag = self.options.get("control_after_generate")
        return bool(flag) if flag is not None else (self.type == "INT" and self.name in LEGACY_SEED_NAMES)

    @property
    def has_upload(self) -> bool:
        return self.type == "COMBO" and any(self.options.get(flag) for flag in UPLOAD_FLAGS)


@dataclass(frozen=True)
class WidgetSlot:
    """One position of ``widgets_values``: the value of input ``name`` (role "value"), or an extra value the
    frontend stores after it (role "control" for control_after_generate, "filter" for a combo control's filter
    list, "upload" for an upload button)."""

    name: str
    role: str
    spec: InputSpec


def _parse_spec(name: str, section: str, raw: Any) -> InputSpec:
    if not isinstance(raw, (list, tuple)) or not raw:
        raise WorkflowError(f"input {name!r}: malformed /object_info spec {raw!r}")
    kind = raw[0]
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if isinstance(kind, (list, tuple)):  # V1 combo: the options are the type
        return InputSpec(name, section, "COMBO", options, tuple(kind))
    if kind == "COMBO":  # V3 combo
        return InputSpec(name, section, "COMBO", options, tuple(options.get("options", ())))
    return InputSpec(name, section, str(kind), options)


def input_specs(info: Mapping[str, Any]) -> list[InputSpec]:
    """The required then the optional inputs of an ``/object_info`` entry, in ``input_order``."""
    specs = []
    inputs = info.get("input", {})
    order = info.get("input_order", {})
    for section in ("required", "optional"):
        entries = inputs.get(section) or {}
        for name in order.get(section) or list(entries):
            specs.append(_parse_spec(name, section, entries[name]))
    return specs


def widget_slots(info: Mapping[str, Any]) -> list[WidgetSlot]:
    """The positions of ``widgets_values`` for a node with this ``/object_info`` entry."""
    slots = []
    for spec in input_specs(info):
        if not spec.is_widget:
            continue
        slots.append(WidgetSlot(spec.name, "value", spec))
        if spec.has_control:
            slots.append(WidgetSlot(spec.name, "control", spec))
            if spec.type == "COMBO":
                slots.append(WidgetSlot(spec.name, "filter", spec))
        if spec.has_upload:
            slots.append(WidgetSlot(spec.name, "upload", spec))
            if spec.options.get("audio_upload"):
                slots.append(WidgetSlot(spec.name, "upload", spec))
    return slots


def widget_values(node: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """Input name -> widget value of a UI node (control, filter and upload values dropped)."""
    slots = widget_slots(info)
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, Mapping):  # some packs store a dict keyed by widget name
        return {slot.name: values[slot.name] for slot in slots if slot.role == "value" and slot.name in values}
    if len(values) != len(slots):
        layout = [f"{s.name}({s.role})" if s.role != "value" else s.name for s in slots]
        raise WorkflowError(f"node {node.get('id')} ({node.get('type')}): {len(values)} widget values {values!r} "
                            f"for {len(slots)} widgets {layout}")
    return {slot.name: value for slot, value in zip(slots, values, strict=True) if slot.role == "value"}


def types_compatible(a: str, b: str) -> bool:
    """Whether a socket of type ``a`` may connect to one of type ``b`` ("*" and comma-separated unions)."""
    if a == "*" or b == "*":
        return True
    return bool(set(a.split(",")) & set(b.split(",")))


# ---- links --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def links_of(workflow: Mapping[str, Any]) -> dict[int, Link]:
    """The workflow's links by id (the array form ``[id, from, slot, to, slot, type]`` or the object form)."""
    out: dict[int, Link] = {}
    for raw in workflow.get("links") or []:
        if isinstance(raw, Mapping):
            link = Link(int(raw["id"]), int(raw["origin_id"]), int(raw["origin_slot"]), int(raw["target_id"]),
                        int(raw["target_slot"]), str(raw["type"]))
        else:
            if len(raw) < 6:
                raise WorkflowError(f"link {raw!r}: expected [id, origin, slot, target, slot, type]")
            link = Link(int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]), str(raw[5]))
        if link.id in out:
            raise WorkflowError(f"link id {link.id} is used twice")
        out[link.id] = link
    return out


def nodes_of(workflow: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    out: dict[int, Mapping[str, Any]] = {}
    for node in workflow.get("nodes") or []:
        node_id = int(node["id"])
        if node_id in out:
            raise WorkflowError(f"node id {node_id} is used twice")
        out[node_id] = node
    return out


# ---- conversion ---------------------------------------------------------------------------------------------------
def ui_to_api(workflow: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The API prompt of a UI workflow (what the frontend posts to ``/prompt`` as ``prompt``)."""
    if "nodes" not in workflow:
        raise WorkflowError("not a UI workflow: no 'nodes' (an API prompt needs no conversion)")
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported by this converter")
    nodes = nodes_of(workflow)
    links = links_of(workflow)

    def origin_of(link_id: int, seen: frozenset[int] = frozenset()) -> tuple[str, Any] | None:
        """("link", [node id, slot]) or ("value", literal) for the source of a link; None if it is cut."""
        if link_id in seen:
            raise WorkflowError(f"link {link_id} is part of a cycle of reroutes or bypassed nodes")
        link = links.get(link_id)
        if link is None:
            raise WorkflowError(f"link {link_id} is referenced but not defined")
        origin = nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowError(f"link {link_id} starts at missing node {link.origin_id}")
        kind, mode = origin.get("type"), origin.get("mode", MODE_NORMAL)
        if kind == PRIMITIVE:
            values = origin.get("widgets_values") or []
            if not values:
                raise WorkflowError(f"PrimitiveNode {link.origin_id} has no value")
            return "value", values[0]
        if kind == REROUTE or mode == MODE_BYPASSED:
            upstream = _pass_through_input(origin, link)
            if upstream is None:
                return None
            return origin_of(upstream, seen | {link_id})
        if mode == MODE_MUTED:
            return None
        return "link", [str(link.origin_id), link.origin_slot]

    prompt: dict[str, dict[str, Any]] = {}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        kind = node.get("type")
        if kind in FRONTEND_ONLY_NODES or node.get("mode", MODE_NORMAL) in (MODE_MUTED, MODE_BYPASSED):
            continue
        info = schemas.get(kind)
        if info is None:
            raise WorkflowError(f"node {node_id}: unknown node type {kind!r} (not in the schemas)")
        inputs: dict[str, Any] = dict(widget_values(node, info))
        for socket in node.get("inputs") or []:
            link_id = socket.get("link")
            if link_id is None:
                continue
            source = origin_of(int(link_id))
            if source is None:
                inputs.pop(socket["name"], None)
            else:
                inputs[socket["name"]] = source[1]
        title = node.get("title") or info.get("display_name") or kind
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def _pass_through_input(node: Mapping[str, Any], link: Link) -> int | None:
    """The link feeding a Reroute or bypassed node's output: the input at the same index if its type fits,
    else the first connected input of a compatible type (as the frontend's bypass)."""
    sockets = node.get("inputs") or []
    if node.get("type") == REROUTE:
        return sockets[0].get("link") if sockets else None
    candidates = []
    if link.origin_slot < len(sockets):
        candidates.append(sockets[link.origin_slot])
    candidates.extend(sockets)
    for socket in candidates:
        if socket.get("link") is not None and types_compatible(str(socket.get("type", "*")), link.type):
            return int(socket["link"])
    return None


def check_api_prompt(prompt: Mapping[str, Mapping[str, Any]],
                     schemas: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What ComfyUI's prompt validation would reject structurally: unknown types, missing required inputs,
    unknown inputs, links to missing nodes or outputs, and links whose output type does not fit the input."""
    problems = []
    for node_id, node in prompt.items():
        kind = node.get("class_type")
        info = schemas.get(kind)
        if info is None:
            problems.append(f"{node_id}: unknown class_type {kind!r}")
            continue
        specs = {spec.name: spec for spec in input_specs(info)}
        inputs = node.get("inputs", {})
        for name, spec in specs.items():
            if spec.section == "required" and name not in inputs:
                problems.append(f"{node_id} ({kind}): required input {name!r} is missing")
        for name, value in inputs.items():
            spec = specs.get(name)
            if spec is None:
                problems.append(f"{node_id} ({kind}): unknown input {name!r}")
                continue
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
                if not spec.is_widget and spec.type not in WIDGET_TYPES:
                    problems.append(f"{node_id} ({kind}): input {name!r} of type {spec.type} needs a link")
                continue
            source_id, slot = value
            source = prompt.get(source_id)
            if source is None:
                problems.append(f"{node_id} ({kind}): input {name!r} links to missing node {source_id}")
                continue
            source_info = schemas.get(source.get("class_type"), {})
            outputs = source_info.get("output", [])
            if not 0 <= slot < len(outputs):
                problems.append(f"{node_id} ({kind}): input {name!r} links to output {slot} of {source_id}, "
                                f"which has {len(outputs)} outputs")
                continue
            if not types_compatible(str(outputs[slot]), spec.type):
                problems.append(f"{node_id} ({kind}): input {name!r} ({spec.type}) is fed {outputs[slot]} "
                                f"by {source_id}")
    return problems


# ---- V3 schema objects -> /object_info ----------------------------------------------------------------------------
def object_info_from_schema(schema: Any, python_module: str = "custom_nodes.pack") -> dict[str, Any]:
    """The ``/object_info`` entry ComfyUI derives from a V3 ``io.Schema`` (``Schema.get_v1_info``): inputs as
    ``(io type, options)`` split into required/optional in declaration order, hidden inputs, outputs."""
    inputs: dict[str, dict[str, Any]] = {"required": {}}
    for item in schema.inputs or []:
        options = dict(item.as_dict())
        options.pop("optional", None)
        inputs.setdefault("optional" if item.optional else "required", {})[item.id] = [item.io_type, options]
    for hidden in schema.hidden or []:
        inputs.setdefault("hidden", {})[hidden.name] = [hidden.value]
    outputs = list(schema.outputs or [])
    return {
        "input": inputs,
        "input_order": {section: list(entries) for section, entries in inputs.items()},
        "output": [o.io_type for o in outputs],
        "output_is_list": [bool(o.is_output_list) for o in outputs],
        "output_name": [o.display_name or o.io_type for o in outputs],
        "output_tooltips": [o.tooltip for o in outputs],
        "name": schema.node_id,
        "display_name": schema.display_name,
        "description": schema.description,
        "category": schema.category,
        "output_node": bool(schema.is_output_node),
        "python_module": python_module,
    }
