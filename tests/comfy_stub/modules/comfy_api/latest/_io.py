"""Stand-in for ``comfy_api.latest.io``: node schemas, typed inputs/outputs and node outputs.

Keyword names of every constructor are those of ComfyUI 0.3.48 through 0.3.64 (the intersection), so code that
passes an option one of those versions lacks fails here as it would there. ``Schema`` is a dataclass with the
same fields; ``ComfyNode.GET_SCHEMA`` finalizes and validates like ComfyUI does before listing a node.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class Input:
    Parent: Any = None

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict | None = None) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict or {}

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def as_dict(self) -> dict[str, Any]:
        return _prune({"display_name": self.display_name, "optional": self.optional or None,
                       "tooltip": self.tooltip, "lazy": self.lazy}) | _prune(self.extra_dict)


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, socketless: bool | None = None,
                 widget_type: str | None = None, force_input: bool | None = None, extra_dict: dict | None = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _prune({"default": self.default, "forceInput": self.force_input})


class Output:
    Parent: Any = None

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class ComfyTypeI:
    io_type: str = ""
    Input = Input


class ComfyTypeIO(ComfyTypeI):
    Output = Output


def comfytype(io_type: str):
    """Bind ``io_type`` to a type class and give its Input/Output classes a ``Parent``."""

    def decorate(cls):
        cls.io_type = io_type
        for name in ("Input", "Output"):
            inner = getattr(cls, name, None)
            if inner is not None:
                setattr(cls, name, type(name, (inner,), {"Parent": cls}))
        return cls

    return decorate


def Custom(io_type: str) -> type[ComfyTypeIO]:  # noqa: N802  (ComfyUI's name)
    return comfytype(io_type)(type(f"Custom_{io_type}", (ComfyTypeIO,), {}))


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: bool | None = None,
                     label_on: str | None = None, label_off: str | None = None, socketless: bool | None = None,
                     force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on = label_on
            self.label_off = label_off


@comfytype("INT")
class Int(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: int | None = None,
                     min: int | None = None, max: int | None = None, step: int | None = None,
                     control_after_generate: bool | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                               "control_after_generate": self.control_after_generate})


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: float | None = None,
                     min: float | None = None, max: float | None = None, step: float | None = None,
                     round: float | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                               "round": self.round})


@comfytype("STRING")
class String(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, multiline: bool = False,
                     placeholder: str | None = None, default: str | None = None,
                     dynamic_prompts: bool | None = None, socketless: bool | None = None,
                     force_input: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts


@comfytype("COMBO")
class Combo(ComfyTypeI):
    class Input(WidgetInput):
        def __init__(self, id: str, options: list[str] | None = None, display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     default: str | None = None, control_after_generate: bool | None = None,
                     upload: UploadType | None = None, image_folder: FolderType | None = None,
                     remote: Any = None, socketless: bool | None = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload = upload

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"options": self.options}


@comfytype("IMAGE")
class Image(ComfyTypeIO):
    pass


@comfytype("MASK")
class Mask(ComfyTypeIO):
    pass


@comfytype("LATENT")
class Latent(ComfyTypeIO):
    pass


@comfytype("CONDITIONING")
class Conditioning(ComfyTypeIO):
    pass


@comfytype("AUDIO")
class Audio(ComfyTypeIO):
    pass


@comfytype("VIDEO")
class Video(ComfyTypeIO):
    pass


@comfytype("MODEL")
class Model(ComfyTypeIO):
    pass


@comfytype("VAE")
class Vae(ComfyTypeIO):
    pass


@comfytype("CLIP")
class Clip(ComfyTypeIO):
    pass


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    def __init__(self, values: dict | None = None) -> None:
        self._values = dict(values or {})

    def __getattr__(self, key: str) -> Any:
        values = self.__dict__.get("_values", {})
        return values.get(Hidden[key]) if key in Hidden.__members__ else None


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    hidden: list[Hidden] | None = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        input_ids = [i.id for i in self.inputs or []]
        output_ids = [o.id for o in self.outputs or []]
        duplicated = [k for k, n in Counter(input_ids).items() if n > 1]
        duplicated += [k for k, n in Counter(output_ids).items() if n > 1]
        duplicated += sorted(set(input_ids) & set(output_ids) - {None})
        if duplicated:
            raise ValueError(f"ids must be unique, but {duplicated} are not")

    def finalize(self) -> None:
        if self.is_output_node:
            self.hidden = list(self.hidden or [])
            for extra in (Hidden.prompt, Hidden.extra_pnginfo):
                if extra not in self.hidden:
                    self.hidden.append(extra)
        for index, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None, expand: dict | None = None,
                 block_execution: str | None = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple | None:
        return self.args if self.args else None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class ComfyNode:
    """Base of V3 nodes: classmethods only; ComfyUI runs ``execute`` on a per-run clone of the class."""

    hidden: HiddenHolder = HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> Any:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802  (ComfyUI's name)
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict | None = None) -> type[ComfyNode]:  # noqa: N802
        clone = type(cls.__name__, (cls,), {})
        clone.hidden = HiddenHolder(hidden_inputs)
        return clone
