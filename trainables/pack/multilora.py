"""Several LoRA adapters on one frozen base model, each applied only to its own rows of a shared batch.

`PackedLora(model, target_modules)` replaces every linear layer that any member may target with a
`MultiLoraLinear`: the base layer (frozen, shared, run ONCE on the whole batch) plus, per member, its own
A/B matrices, scaling (alpha / r, or alpha / sqrt(r) for rsLoRA) and dropout. Inside `routed(rows)` each
layer adds member i's `B(A(dropout(x))) * scale_i` to member i's rows only, so one forward/backward through
the base serves the whole pack while every member's rows compute exactly what its own peft model would.

Rows never mix: a row's output depends only on its own tokens and its own member's weights (the base is
row-wise; attention stays inside a row), so one member's gradients come from its rows alone and a member
going NaN poisons only its own rows.

Each member's weights start as `peft.get_peft_model` starts them right after `torch.manual_seed(seed)`
(A kaiming-uniform, B zero, same random stream and module order), are saved under the keys
`get_peft_model_state_dict` gives, and export to a directory `PeftModel.from_pretrained` loads.
Dropout: a member with dropout > 0 draws its masks from the process's shared random stream, in the pack's
order, so its masks differ from the ones the same configuration draws alone (the losses then agree only
in distribution, not number for number); with dropout 0 the packed and alone runs agree to float error.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ALL_LINEAR = "all-linear"
TASK_TYPE = "CAUSAL_LM"


@dataclass(frozen=True)
class MemberSpec:
    """One LoRA configuration in the pack. target_modules: module names as peft matches them (a name
    or a dotted suffix), or ("all-linear",); they must lie inside the pack's shared set."""

    member_id: str
    r: int
    alpha: float
    dropout: float
    use_rslora: bool
    target_modules: tuple[str, ...]
    seed: int

    @property
    def scale(self) -> float:
        return self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r


@dataclass
class _Adapter:
    A: nn.Parameter  # (r, in_features)
    B: nn.Parameter  # (out_features, r)
    scale: float
    dropout: float


class MultiLoraLinear(nn.Module):
    """A frozen base linear layer (nn.Linear, or bitsandbytes' Linear4bit for nf4) shared by the pack's
    members, plus each member's LoRA on that member's rows of the batch (the route)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.adapters: dict[str, _Adapter] = {}  # not registered: the base model's state_dict stays the base's
        self.route: list[tuple[str, int, int]] | None = None  # (member_id, first row, end row), set by routed()

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        if self.route is None:
            if self.adapters:  # no silent base-only output while members exist: say which rows are whose
                raise RuntimeError("PackedLora: forward outside `routed(...)` / `base_only()`; route the batch's "
                                   "rows to their members first")
            return out
        if self.route and self.route[-1][2] != x.shape[0]:
            raise ValueError(f"PackedLora: the route covers {self.route[-1][2]} rows, the batch has {x.shape[0]}")
        pieces, changed = [], False
        for member, start, end in self.route:
            piece, lora = out[start:end], self.adapters.get(member)
            if lora is not None:
                xi = x[start:end].to(lora.A.dtype)  # as peft's _cast_input_dtype
                if lora.dropout > 0:
                    xi = nn.functional.dropout(xi, lora.dropout, self.training)
                piece, changed = piece + nn.functional.linear(nn.functional.linear(xi, lora.A), lora.B) * lora.scale, True
            pieces.append(piece)
        return torch.cat(pieces).to(out.dtype) if changed else out


def _peft_config(spec: MemberSpec, targets: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, use_rslora=spec.use_rslora,
                      target_modules=targets, task_type=TASK_TYPE)


def _spelled(target_modules: Iterable[str] | str) -> Any:
    """target_modules as peft's LoraConfig takes them: the string "all-linear" or a list of names."""
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    return ALL_LINEAR if names == [ALL_LINEAR] else names


def _matched(model: nn.Module, names: list[str], targets: Any) -> list[str]:
    """The modules peft would put LoRA on for `targets`, in peft's (named_modules) order."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists

    config = LoraConfig(target_modules=targets, task_type=TASK_TYPE)
    if targets == ALL_LINEAR:
        config = _maybe_include_all_linear_layers(config, model)  # peft's own expansion (output head left out)
    return [n for n in names if n and check_target_module_exists(config, n)]


class PackedLora:
    """The pack's members on one base model (module docstring). Wraps the model in place; `unwrap()`
    puts the original layers back."""

    def __init__(self, model: nn.Module, target_modules: Iterable[str] | str):
        self.model = model
        self._names = [n for n, _ in model.named_modules()]  # before wrapping: what members' targets match
        shared = _matched(model, self._names, _spelled(target_modules))
        if not shared:
            raise ValueError(f"lora.target_modules: {list(_spelled(target_modules))} match no module of the model")
        self._all_linear = _matched(model, self._names, ALL_LINEAR)
        self._trained = [p for p in model.parameters() if p.requires_grad]  # given back by unwrap()
        for p in self._trained:
            p.requires_grad_(False)  # the shared base never trains
        self.layers: dict[str, MultiLoraLinear] = {}
        for name in shared:
            module = model.get_submodule(name)
            if not hasattr(module, "in_features") or isinstance(module, (nn.Embedding, MultiLoraLinear)):
                raise ValueError(f"lora.target_modules: {name} is a {type(module).__name__}, not a linear layer; "
                                 "a pack puts LoRA on linear layers only")
            self.layers[name] = MultiLoraLinear(module)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, self.layers[name])
        self.specs: dict[str, MemberSpec] = {}
        self._modules: dict[str, list[str]] = {}  # member -> its layers, in peft's order

    # ------------------------------------------------------------------------- members

    def add(self, spec: MemberSpec) -> None:
        """A new member, initialised as get_peft_model initialises LoRA right after torch.manual_seed(seed):
        per targeted module in order, nn.Linear(in, r) and nn.Linear(r, out) are constructed (each draws a
        kaiming-uniform weight), then A is drawn again (peft's reset_lora_parameters) and B zeroed. The
        process's random stream is left as it was (other members' dropout does not shift)."""
        if spec.member_id in self.specs:
            raise ValueError(f"PackedLora: member {spec.member_id!r} is already in the pack")
        targets = _spelled(spec.target_modules)
        modules = self._all_linear if targets == ALL_LINEAR else _matched(self.model, self._names, targets)
        outside = [n for n in modules if n not in self.layers]
        if not modules or outside:
            raise ValueError(f"lora.target_modules: {list(spec.target_modules)} of {spec.member_id} "
                             f"{'match no module' if not modules else 'reach ' + ', '.join(outside[:3])}, "
                             "outside the pack's shared target modules; pack it separately")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            for name in modules:
                layer = self.layers[name]
                a = torch.empty(spec.r, layer.in_features)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear(in, r)'s own init
                b = torch.empty(layer.out_features, spec.r)
                nn.init.kaiming_uniform_(b, a=math.sqrt(5))  # nn.Linear(r, out)'s own init, then zeroed
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # peft's reset_lora_parameters
                b.zero_()
                device, dtype = _device_dtype(layer.base)
                layer.adapters[spec.member_id] = _Adapter(nn.Parameter(a.to(device, dtype)),
                                                          nn.Parameter(b.to(device, dtype)), spec.scale, spec.dropout)
        self.specs[spec.member_id] = spec
        self._modules[spec.member_id] = modules

    def remove(self, member_id: str) -> None:
        """Drop a member; its weights are freed once its optimizer (which holds them too) is dropped."""
        self._known(member_id)
        for name in self._modules.pop(member_id):
            del self.layers[name].adapters[member_id]
        del self.specs[member_id]

    def members(self) -> list[str]:
        return list(self.specs)

    def parameters_of(self, member_id: str) -> list[nn.Parameter]:
        """The member's trainable weights in the order its peft model lists them (A then B per module), so an
        optimizer state saved here loads into the same configuration run alone, and back."""
        self._known(member_id)
        out = []
        for name in self._modules[member_id]:
            lora = self.layers[name].adapters[member_id]
            out += [lora.A, lora.B]
        return out

    def state_of(self, member_id: str) -> dict[str, torch.Tensor]:
        """The member's weights under get_peft_model_state_dict's keys (a copy: training goes on)."""
        self._known(member_id)
        out = {}
        for name in self._modules[member_id]:
            lora = self.layers[name].adapters[member_id]
            out[f"base_model.model.{name}.lora_A.weight"] = lora.A.detach().clone()
            out[f"base_model.model.{name}.lora_B.weight"] = lora.B.detach().clone()
        return out

    def load_state(self, member_id: str, state: dict[str, torch.Tensor]) -> None:
        """Weights saved by state_of (or get_peft_model_state_dict of the same configuration) into the member."""
        mine = self.state_of(member_id)
        if set(state) != set(mine):
            missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
            raise ValueError(f"PackedLora: the state given for {member_id} does not fit its modules "
                             f"(missing {missing[:2]}, unexpected {extra[:2]})")
        with torch.no_grad():
            for name in self._modules[member_id]:
                lora = self.layers[name].adapters[member_id]
                lora.A.copy_(state[f"base_model.model.{name}.lora_A.weight"])
                lora.B.copy_(state[f"base_model.model.{name}.lora_B.weight"])

    def save_peft(self, member_id: str, path: str | Path) -> None:
        """adapter_config.json + adapter_model.safetensors, as PeftModel.save_pretrained writes them."""
        from safetensors.torch import save_file

        spec, path = self.specs[self._known(member_id)], Path(path)
        targets = _spelled(spec.target_modules)
        config = _peft_config(spec, set(self._all_linear) if targets == ALL_LINEAR else targets)
        config.base_model_name_or_path = getattr(self.model, "name_or_path", None)
        config.inference_mode = True
        path.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(str(path))
        state = {k: v.contiguous() for k, v in self.state_of(member_id).items()}
        save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        json.loads((path / "adapter_config.json").read_text())  # written whole

    # ------------------------------------------------------------------------- routing

    @contextlib.contextmanager
    def routed(self, rows: list[tuple[str, int]]) -> Iterator[None]:
        """Forward (and backward: gradient checkpointing recomputes inside it) with the batch's rows, in order,
        belonging to (member_id, n_rows) each."""
        route, start = [], 0
        for member, n in rows:
            self._known(member)
            route.append((member, start, start + n))
            start += n
        with self._route(route):
            yield

    def base_only(self) -> contextlib.AbstractContextManager[None]:
        """Forward through the bare base model (no member's LoRA), e.g. to score examples for a selection."""
        return self._route([])

    @contextlib.contextmanager
    def _route(self, route: list[tuple[str, int, int]]) -> Iterator[None]:
        for layer in self.layers.values():
            layer.route = route
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.route = None

    def unwrap(self) -> nn.Module:
        """The model with its original layers back (members dropped)."""
        for name, layer in self.layers.items():
            parent, _, attr = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, attr, layer.base)
        for p in self._trained:
            p.requires_grad_(True)
        self.layers, self.specs, self._modules, self._trained = {}, {}, {}, []
        return self.model

    def _known(self, member_id: str) -> str:
        if member_id not in self.specs:
            raise KeyError(f"PackedLora: no member {member_id!r} (members: {', '.join(self.specs) or 'none'})")
        return member_id


def _device_dtype(base: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a member's LoRA lives: the base layer's device, float32 (get_peft_model's autocast_adapter_dtype
    keeps adapters fp32 over bf16/fp16 bases; 4-bit weights are not a float dtype to follow)."""
    weight = base.weight
    return weight.device, weight.dtype if weight.dtype == torch.float64 else torch.float32
