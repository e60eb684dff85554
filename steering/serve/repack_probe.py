"""Whether llama.cpp's weight repacking works on this machine, decided by trying it.

Repacking ("extra buffer types") rearranges quantised weights for the CPU's fastest kernels
(AMX, AVX-512 VNNI ...). Some virtual machines advertise AMX without enabling its tile registers,
and there the first matmul kills the process with SIGILL; on others (a Xeon with AMX) a model
loads and decodes repacked, but the first decode with a LoRA adapter active dies with SIGSEGV.
So a child process loads the model with repacking, activates a rank-1 adapter on one attention
weight (written by the probe itself) and decodes two tokens; if it exits cleanly, repacking is
on. The answer is cached per machine and weight format (CPU model and flags, llama-cpp-python version, the
probe's own text, the model's tensor types: a float32 model is not repacked, so its probe says
nothing about a Q4_1 one) under ~/.cache/steering/llamacpp-repack.json and logged. STEERING_LLAMACPP_REPACK=1 or
0 decides without a probe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

REPACK_ENV = "STEERING_LLAMACPP_REPACK"
PROBE_TIMEOUT_S = 300
PROBE = """
import ctypes, os, sys, tempfile
import gguf, llama_cpp
import numpy as np
path = sys.argv[1]
reader = gguf.GGUFReader(path)
weight = next(t for t in reader.tensors if t.name.endswith("attn_q.weight"))
columns, rows = (int(n) for n in weight.shape[:2])
fd, lora = tempfile.mkstemp(suffix=".gguf", prefix="steering-probe-")
os.close(fd)
writer = gguf.GGUFWriter(lora, arch=reader.fields["general.architecture"].contents())
writer.add_type(gguf.GGUFType.ADAPTER)
writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 1.0)
writer.add_tensor(weight.name + ".lora_a", np.full((1, columns), 0.01, np.float32))
writer.add_tensor(weight.name + ".lora_b", np.full((rows, 1), 0.01, np.float32))
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
llama_cpp.llama_backend_init()
params = llama_cpp.llama_model_default_params()
params.use_extra_bufts = True
model = llama_cpp.llama_model_load_from_file(path.encode(), params)
assert model, "the model did not load"
context_params = llama_cpp.llama_context_default_params()
context_params.n_ctx = 64
context_params.n_threads = context_params.n_threads_batch = 1
ctx = llama_cpp.llama_init_from_model(model, context_params)
adapter = llama_cpp.llama_adapter_lora_init(model, lora.encode())
os.unlink(lora)
assert adapter, "the adapter did not load"
adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
assert llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) == 0
tokens = (llama_cpp.llama_token * 2)(1, 2)
assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, 2)) == 0
"""


def weight_types(model_path: Path) -> str:
    """The quantisation types of the model's tensors (Q4_1, F32 ...): repacking rearranges only
    some of them, so a float32 copy of a model can survive where its Q4_1 original crashes."""
    try:
        import gguf

        types = {tensor.tensor_type.name for tensor in gguf.GGUFReader(str(model_path)).tensors}
    except Exception:  # noqa: BLE001 (no file, or no GGUF: the probe then fails on it anyway)
        return "unreadable"
    return ",".join(sorted(types))


def machine_key(model_path: Path) -> str:
    """The CPU (model name and flags, from /proc/cpuinfo), the llama.cpp build, the probe (a
    changed probe asks again) and the model's weight types."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
        cpu = "\n".join(sorted(set(lines)))
    except OSError:
        cpu = platform.processor()
    try:
        from importlib.metadata import version

        engine = version("llama-cpp-python")
    except Exception:  # noqa: BLE001 (any failure: the key just says unknown)
        engine = "unknown"
    key = f"{platform.machine()}\n{cpu}\n{engine}\n{PROBE}\n{weight_types(model_path)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_file() -> Path:
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return home / "steering" / "llamacpp-repack.json"


def probe(model_path: Path) -> bool:
    """Load `model_path` with repacking in a child process and decode; True if it survived."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(model_path)],
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def repack_enabled(model_path: Path, try_it=probe) -> bool:
    """STEERING_LLAMACPP_REPACK if set, else the cached answer for this machine, else
    `try_it(model_path)` (the probe), whose answer is then cached."""
    chosen = os.environ.get(REPACK_ENV, "").strip()
    if chosen in ("0", "1"):
        return chosen == "1"
    key, path = machine_key(model_path), cache_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return bool(known[key])
    works = try_it(model_path)
    log.info(
        "llama.cpp weight repacking %s on this machine (probed once, cached in %s)",
        "works" if works else "crashed or failed, so it stays off",
        path,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps({**known, key: works}, indent=1))
        os.replace(partial, path)
    except OSError:
        log.warning("could not cache the repacking probe's answer in %s", path)
    return works
