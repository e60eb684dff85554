"""Parameter-space conditioning: K low-rank adapters per conditioned linear layer, mixed per row.

For a weighting ``w`` (one row of a ``(B, K)`` matrix) a conditioned layer computes exactly

    y = W0 x + sum_k w_k * (alpha / r) * B_k @ A_k @ x

The K adapters of a layer are stored concatenated: ``A`` is ``(K*r, in)`` (rows ``k*r:(k+1)*r``
are ``A_k``) and ``B`` is ``(out, K*r)`` (columns ``k*r:(k+1)*r`` are ``B_k``). Scaling the
``K*r`` hidden units of ``A x`` by ``w_k * alpha / r`` before ``B`` gives the sum above in one
matmul per layer, for every row of the batch at once.

Unlike peft's ``add_weighted_adapter(..., "linear")``, which scales A and B each by sqrt(w_k) and
so mixes ``sum_k w_k B_k A_k`` only for a single shared weighting, this mixing is exact and varies
per row.

A layer can hold several named adapter banks (``clp``, ``soups``, ``prompt`` ...) over one shared
base model; one bank is active at a time.
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from steering.errors import UserError
from steering.model.policy import BaseModelIdentity

VARIANTS = ("attn", "full", "logit")
ADAPTER_FILE = "adapter.safetensors"
METADATA_FILE = "adapter.json"


@dataclass(frozen=True)
class AdapterSpec:
    """Everything that defines an adapter bank apart from its trained values."""

    objectives: tuple[str, ...]
    variant: str = "attn"
    rank: int = 8
    alpha: float = 16.0
    # names (or name suffixes) of the linear layers to condition; empty: the variant's choice
    target_modules: tuple[str, ...] = ()

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise UserError(
                f"variant {self.variant!r} is unknown; choose one of {', '.join(VARIANTS)}"
            )
        if not self.objectives:
            raise UserError("an adapter bank needs at least one objective")
        if self.rank < 1:
            raise UserError(f"rank must be at least 1, got {self.rank}")

    @property
    def num_adapters(self) -> int:
        return len(self.objectives)

    def fits(self, other: AdapterSpec) -> bool:
        """Whether `other` holds these adapters (layers, rank, alpha, as many objectives) under
        whatever objective names: what a run may start from (`--init-from`)."""
        return self.num_adapters == other.num_adapters and (
            replace(other, objectives=self.objectives) == self
        )


@dataclass(frozen=True)
class AdapterMetadata:
    """The JSON saved next to the adapter tensors."""

    spec: AdapterSpec
    base_model: BaseModelIdentity
    training: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        spec = asdict(self.spec)
        spec["objectives"] = list(self.spec.objectives)
        spec["target_modules"] = list(self.spec.target_modules)
        if not self.spec.target_modules:
            del spec[
                "target_modules"
            ]  # the files of adapters without an override stay as they were
        return {"spec": spec, "base_model": asdict(self.base_model), "training": self.training}

    @classmethod
    def from_json(cls, data: dict) -> AdapterMetadata:
        spec = dict(data["spec"])
        spec["objectives"] = tuple(spec["objectives"])
        spec["target_modules"] = tuple(spec.get("target_modules", ()))
        return cls(
            spec=AdapterSpec(**spec),
            base_model=BaseModelIdentity(**data["base_model"]),
            training=data.get("training", {}),
        )


class LoraBank(nn.Module):
    """K rank-r adapters of one linear layer, concatenated along the rank axis."""

    def __init__(self, in_features: int, out_features: int, spec: AdapterSpec):
        super().__init__()
        hidden = spec.num_adapters * spec.rank
        self.rank = spec.rank
        self.scaling = spec.alpha / spec.rank
        # peft's default init: A Kaiming-uniform, B zero, so a fresh bank leaves the base unchanged.
        self.A = nn.Parameter(torch.empty(hidden, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, hidden))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def unit_scale(self, weights: torch.Tensor) -> torch.Tensor:
        """(B, K) weights -> (B, K*r): hidden unit j of adapter k is scaled by w_k alpha / r."""
        return (weights.to(self.A.dtype) * self.scaling).repeat_interleave(self.rank, dim=1)

    def delta(self, x: torch.Tensor, unit_scale: torch.Tensor) -> torch.Tensor:
        """sum_k w_k (alpha/r) B_k A_k x for x (B, T, in), given `unit_scale(w)` (B, K*r)."""
        h = F.linear(x.to(self.A.dtype), self.A)  # (B, T, K*r)
        return F.linear(h * unit_scale[:, None, :], self.B)  # (B, T, out)

    def merged_delta(self, weights: torch.Tensor) -> torch.Tensor:
        """The (out, in) matrix sum_k w_k (alpha/r) B_k A_k for one weighting (K,)."""
        per_unit = (weights.to(self.A.dtype) * self.scaling).repeat_interleave(self.rank)
        return (self.B * per_unit[None, :]) @ self.A  # (out, K*r) @ (K*r, in) -> (out, in)


class MixedLoraLinear(nn.Module):
    """A frozen linear layer plus named adapter banks; the active bank's weights are per row."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.banks = nn.ModuleDict()
        self.active: str | None = None
        self.weights: torch.Tensor | None = None  # (B, K) for the active bank
        # (B, K*r), computed once per weighting rather than in every forward of every token
        self.unit_scale: torch.Tensor | None = None
        # B scaled by the active weighting, for inference (see `_scaled_b`)
        self._scaled_b_key: tuple | None = None
        self._scaled_b_value: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.active is None or self.weights is None:
            return out
        bank = self.banks[self.active]
        if torch.is_grad_enabled():
            # training: the float32 adapter parameters take part in autograd
            return out + bank.delta(x, self.unit_scale).to(out.dtype)
        # Inference: the same sum in fewer operations per token. The small matmuls stay in the
        # adapters' float32: on this CPU a bfloat16 matmul with one row of activations costs
        # several times a float32 one (`python -m steering bench generate`, README).
        h = F.linear(x.to(bank.A.dtype), bank.A)  # (B, T, K*r)
        scaled_b = self._scaled_b(bank)
        if scaled_b is None:
            scaled_b = bank.B
            h = h * self.unit_scale[:, None, :]
        return out.add_(F.linear(h, scaled_b))  # add_ rounds into the output's dtype

    def _scaled_b(self, bank: LoraBank) -> torch.Tensor | None:
        """B diag(s) for the weighting every row shares (s_j = w_k alpha/r for unit j of
        adapter k), so that B diag(s) A x takes two matmuls; None when rows differ.

        Rebuilt only when the bank, the weighting or B (its in-place version counter, which an
        optimizer step or a load bumps) changes. The key holds the bank and the scale
        themselves, compared by identity, so neither can be freed and its id reused meanwhile.
        """
        scale = self.unit_scale
        old = self._scaled_b_key
        if old is None or old[0] is not bank or old[1] is not scale or old[2] != bank.B._version:
            uniform = scale.shape[0] == 1 or bool((scale == scale[:1]).all())
            self._scaled_b_value = bank.B * scale[0] if uniform else None
            self._scaled_b_key = (bank, scale, bank.B._version)
        return self._scaled_b_value


def conditioned_layer_names(
    model: nn.Module, variant: str, target_modules: tuple[str, ...] = ()
) -> list[str]:
    """Qualified names of the linear layers a variant conditions, for any transformers causal LM.

    - `attn`: every linear layer inside an attention module (a module whose class name says
      Attention: q/k/v/o in Llama, Qwen, Gemma, Mistral; qkv_proj and o_proj in Phi-3;
      query_key_value and dense in GPT-NeoX ...).
    - `full`: every linear layer but the output head.
    - `logit`: the output head.
    `target_modules` overrides the variant's choice: layers whose name is, or ends in, one of them.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((n for n, m in model.named_modules() if m is head), "lm_head")
    if variant == "logit" and not target_modules:
        return [head_name]
    wrapped = {f"{n}.base" for n, m in model.named_modules() if isinstance(m, MixedLoraLinear)}
    attention = {
        n for n, m in model.named_modules() if "attention" in type(m).__name__.lower() and n
    }
    names, linear = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear | MixedLoraLinear) or name in wrapped:
            continue
        if name == head_name:
            continue
        linear.append(name)
        if target_modules:
            chosen = any(name == t or name.endswith("." + t) for t in target_modules)
        elif variant == "full":
            chosen = True
        else:
            chosen = name.rpartition(".")[0] in attention
        if chosen:
            names.append(name)
    if not names:
        leaves = sorted({n.rpartition(".")[2] for n in linear})
        asked = ", ".join(target_modules) if target_modules else f"the {variant} variant"
        raise UserError(
            f"no linear layer of this {type(model).__name__} matches {asked}; its linear "
            f"layers are called {', '.join(leaves) or 'nothing (it has none)'}: choose with "
            "--target-modules"
        )
    return names


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def mixed_layers(model: nn.Module) -> list[MixedLoraLinear]:
    return [m for m in model.modules() if isinstance(m, MixedLoraLinear)]


def attach(model: nn.Module, name: str, spec: AdapterSpec) -> list[MixedLoraLinear]:
    """Add a fresh adapter bank called `name` to every layer the spec's variant conditions.

    Layers are wrapped in place (once); the base weights stay frozen and shared.
    """
    layers = []
    for layer_name in conditioned_layer_names(model, spec.variant, spec.target_modules):
        layer = model.get_submodule(layer_name)
        if not isinstance(layer, MixedLoraLinear):
            layer = MixedLoraLinear(layer)
            _set_submodule(model, layer_name, layer)
        bank = LoraBank(layer.in_features, layer.out_features, spec).to(layer.weight.device)
        layer.banks[name] = bank
        layers.append(layer)
    model._adapter_specs = {**getattr(model, "_adapter_specs", {}), name: spec}
    return layers


def bank_spec(model: nn.Module, name: str) -> AdapterSpec:
    specs = getattr(model, "_adapter_specs", {})
    if name not in specs:
        raise UserError(
            f"adapter bank {name!r} is not attached; attached: {', '.join(specs) or 'none'}"
        )
    return specs[name]


def bank_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    return [
        p
        for layer in mixed_layers(model)
        if name in layer.banks
        for p in layer.banks[name].parameters()
    ]


def set_weights(model: nn.Module, name: str | None, weights: torch.Tensor | None) -> None:
    """Activate bank `name` with per-row weights (B, K), or switch adapters off with None.

    Internal callers may pass rows of zeros (the base model exactly); user input is a
    `steering.weights.Weights`, checked where it came in.
    """
    if name is not None:
        spec = bank_spec(model, name)
        if weights is None or weights.dim() != 2 or weights.shape[1] != spec.num_adapters:
            raise ValueError(f"bank {name!r} needs a (B, {spec.num_adapters}) weight matrix")
    scales: dict[tuple, torch.Tensor] = {}  # banks of one spec share the same unit scaling
    for layer in mixed_layers(model):
        if name is not None and name in layer.banks:
            bank = layer.banks[name]
            key = (bank.rank, bank.scaling, bank.A.dtype)
            if key not in scales:
                scales[key] = bank.unit_scale(weights)
            layer.active, layer.weights, layer.unit_scale = name, weights, scales[key]
        else:
            layer.active, layer.weights, layer.unit_scale = None, None, None


@contextmanager
def conditioned(model: nn.Module, name: str | None, weights: torch.Tensor | None):
    """Run the model with bank `name` active at per-row `weights` (B, K); the previous state
    comes back on exit. `name=None` switches every adapter off."""
    previous = [
        (layer, layer.active, layer.weights, layer.unit_scale) for layer in mixed_layers(model)
    ]
    set_weights(model, name, weights)
    try:
        yield model
    finally:
        for layer, active, w, scale in previous:
            layer.active, layer.weights, layer.unit_scale = active, w, scale


def adapters_off(model: nn.Module):
    """Inside, every conditioned layer returns exactly the base layer's output."""
    return conditioned(model, None, None)


def merged_copy(model: nn.Module, name: str, weights) -> nn.Module:
    """A copy of the model with bank `name` folded in at one weighting (K,): the fast path for a
    single w. Every wrapped layer becomes a plain nn.Linear holding W0 + sum_k w_k (alpha/r) B_k A_k.
    """
    spec = bank_spec(model, name)
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    if w.shape[0] != spec.num_adapters:
        raise ValueError(f"bank {name!r} needs {spec.num_adapters} weights, got {w.shape[0]}")
    with adapters_off(model):
        merged = copy.deepcopy(model)
    for layer_name, module in list(merged.named_modules()):
        if not isinstance(module, MixedLoraLinear):
            continue
        base = module.base
        plain = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        plain = plain.to(device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            weight = base.weight.float()
            if name in module.banks:
                weight = weight + module.banks[name].merged_delta(w).float()
            plain.weight.copy_(weight.to(base.weight.dtype))
            if base.bias is not None:
                plain.bias.copy_(base.bias)
        plain.requires_grad_(False)
        _set_submodule(merged, layer_name, plain)
    merged._adapter_specs = {}
    return merged


def save_bank(
    model: nn.Module, name: str, directory: str | Path, metadata: AdapterMetadata
) -> Path:
    """Write bank `name` as safetensors plus JSON metadata into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for layer_name, module in model.named_modules():
        if isinstance(module, MixedLoraLinear) and name in module.banks:
            bank = module.banks[name]
            tensors[f"{layer_name}.A"] = bank.A.detach().float().contiguous()
            tensors[f"{layer_name}.B"] = bank.B.detach().float().contiguous()
    save_file(tensors, str(directory / ADAPTER_FILE))
    (directory / METADATA_FILE).write_text(json.dumps(metadata.to_json(), indent=2) + "\n")
    return directory


def read_metadata(directory: str | Path) -> AdapterMetadata:
    directory = Path(directory)
    meta_path = directory / METADATA_FILE
    if (
        not directory.is_dir()
        or not meta_path.is_file()
        or not (directory / ADAPTER_FILE).is_file()
    ):
        raise UserError(
            f"{directory} is not an adapter directory ({ADAPTER_FILE} + {METADATA_FILE})"
        )
    try:
        return AdapterMetadata.from_json(json.loads(meta_path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{meta_path} is not valid adapter metadata ({error})") from None


def read_bank_tensors(
    directory: str | Path, metadata: AdapterMetadata
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The saved bank as {layer name: (A (K*r, in), B (out, K*r))} in float32, sorted by name.

    Refuses, in one sentence, an unreadable file, tensors other than `.A`/`.B` pairs, a rank
    other than the metadata's, and NaN or infinite values.
    """
    path = Path(directory) / ADAPTER_FILE
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable adapter file ({error})") from None
    layer_names = sorted({name.rsplit(".", 1)[0] for name in tensors})
    if set(tensors) != {f"{n}.{part}" for n in layer_names for part in ("A", "B")}:
        raise UserError(f"adapter in {directory} holds tensors other than matching .A/.B pairs")
    hidden = metadata.spec.num_adapters * metadata.spec.rank
    bank = {}
    for layer_name in layer_names:
        a = tensors[f"{layer_name}.A"].float()
        b = tensors[f"{layer_name}.B"].float()
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != hidden or b.shape[1] != hidden:
            raise UserError(
                f"adapter in {directory} does not hold {metadata.spec.num_adapters} adapters of "
                f"rank {metadata.spec.rank} in {layer_name}, as its metadata says"
            )
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise UserError(f"adapter in {directory} holds NaN or infinite values")
        bank[layer_name] = (a, b)
    return bank


def adapter_objectives(metadata: AdapterMetadata) -> tuple[str, ...]:
    """The objectives a bank steers: the training objectives (the prompt baseline's one adapter
    is called `prompt` but steers them all), else the adapters' own names."""
    return tuple(metadata.training.get("objectives", metadata.spec.objectives))


def check_base_model(
    metadata: AdapterMetadata, identity: BaseModelIdentity, directory: str | Path
) -> None:
    """Refuse, in one sentence, a base model other than the one the adapter was trained on."""
    if metadata.base_model.sha256 != identity.sha256:
        raise UserError(
            f"adapter in {directory} was trained on base model {metadata.base_model.name} "
            f"({metadata.base_model.sha256[:12]}), not on {identity.name} ({identity.sha256[:12]})"
        )


def load_bank(
    model: nn.Module,
    name: str,
    directory: str | Path,
    base_identity: BaseModelIdentity,
    objectives: tuple[str, ...] | None = None,
) -> AdapterMetadata:
    """Attach bank `name` and fill it from `directory`, refusing a mismatched base model or
    objective list with one clear sentence."""
    metadata = read_metadata(directory)
    check_base_model(metadata, base_identity, directory)
    if objectives is not None and tuple(objectives) != metadata.spec.objectives:
        raise UserError(
            f"adapter in {directory} was trained for objectives {', '.join(metadata.spec.objectives)}, "
            f"not {', '.join(objectives)}"
        )
    attach(model, name, metadata.spec)
    fill_bank(model, name, directory, metadata)
    return metadata


def fill_bank(
    model: nn.Module, name: str, directory: str | Path, metadata: AdapterMetadata
) -> None:
    """Copy the tensors saved in `directory` into the attached bank `name`, in place (its
    parameters stay the objects an optimizer may hold), refusing other layers or shapes."""
    tensors = read_bank_tensors(directory, metadata)
    layers = [layer for layer in mixed_layers(model) if name in layer.banks]
    names = {id(m): n for n, m in model.named_modules()}
    if set(tensors) != {names[id(layer)] for layer in layers}:
        raise UserError(f"adapter in {directory} does not match this model's layers")
    with torch.no_grad():
        for layer in layers:
            bank = layer.banks[name]
            a, b = tensors[names[id(layer)]]
            if a.shape != bank.A.shape or b.shape != bank.B.shape:
                raise UserError(f"adapter in {directory} does not match this model's layer shapes")
            bank.A.copy_(a)
            bank.B.copy_(b)
