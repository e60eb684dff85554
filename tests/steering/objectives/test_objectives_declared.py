"""Objectives declared in a TOML file: parsing, every kind scoring, the one-sentence errors, and
the content hashes that make an adapter's scorers rebuild exactly or refuse."""

import json
import textwrap

import numpy as np
import pytest
import torch
from conftest import build_tiny_classifier
from tiny_models import build_tiny_reward_model

from steering.__main__ import main
from steering.errors import UserError
from steering.objectives.declared import (
    ObjectiveSpec,
    objectives_from_json,
    read_objectives_file,
    resolve_objectives,
)
from steering.objectives.reward_model import reward_model_inputs

PROMPTS = ["Review a cafe.", "Say hi."]
RESPONSES = ["The coffee was lovely and the staff were kind.", "Hi!"]


@pytest.fixture(scope="module")
def reward_models(tmp_path_factory, tokenizer):
    """Two one-output reward models: one whose tokenizer has a chat template, one without."""
    root = tmp_path_factory.mktemp("reward-models")
    build_tiny_reward_model(len(tokenizer), seed=1).save_pretrained(root / "chat")
    tokenizer.save_pretrained(root / "chat")
    build_tiny_reward_model(len(tokenizer), seed=2).save_pretrained(root / "pair")
    tokenizer.save_pretrained(root / "pair")
    config = json.loads((root / "pair" / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (root / "pair" / "tokenizer_config.json").write_text(json.dumps(config))
    (root / "pair" / "chat_template.jinja").unlink(missing_ok=True)
    return root


def write(tmp_path, text: str, name="objectives.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def by_hand(directory, prompts, responses):
    """The reward model's logit computed directly: the pair through its own tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    model.config.pad_token_id = tok.pad_token_id or tok.eos_token_id
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        if response is None:  # a text the caller already wrote whole
            ids = tok(prompt)
        elif tok.chat_template:
            conversation = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            ids = tok(
                tok.apply_chat_template(conversation, tokenize=False), add_special_tokens=False
            )
        else:
            ids = tok(prompt, response)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids["input_ids"]])).logits
        out.append(float(logits[0, 0]))
    return np.array(out)


def test_a_file_declares_several_kinds_side_by_side(tmp_path, reward_models, monkeypatch):
    (tmp_path / "myrewards.py").write_text(
        "def exclaim(prompts, responses):\n    return [r.count('!') for r in responses]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(
        tmp_path,
        f"""
        [objectives.helpful]
        kind = "reward-model"
        model = "{reward_models / "chat"}"
        [objectives.harmless]
        kind = "reward-model"
        model = "{reward_models / "pair"}"
        [objectives.upbeat]
        kind = "builtin"
        objective = "positivity"
        [objectives.excited]
        kind = "python"
        function = "myrewards:exclaim"
        """,
    )
    declared = read_objectives_file(path)
    assert declared.names == ("helpful", "harmless", "upbeat", "excited")  # the file's order
    scores = declared.score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(scores["excited"], [0, 1])
    np.testing.assert_allclose(
        scores["helpful"], by_hand(reward_models / "chat", PROMPTS, RESPONSES), atol=1e-5
    )
    np.testing.assert_allclose(
        scores["harmless"], by_hand(reward_models / "pair", PROMPTS, RESPONSES), atol=1e-5
    )
    assert scores["upbeat"][0] > 0.3 and scores["upbeat"][1] == 0  # VADER: "lovely", "kind"
    specs = {s["name"]: s for s in declared.to_json()}
    assert len(specs["helpful"]["sha256"]) == 64 and specs["helpful"]["model"].endswith("chat")
    assert "sha256" not in specs["excited"]


def test_reward_model_inputs_follow_the_chat_template_or_make_a_pair(tokenizer):
    chat = reward_model_inputs(tokenizer, ["Q?"], ["A."], 64)
    text = tokenizer.decode(chat["input_ids"][0])
    assert "Q?" in text and "A." in text and "assistant" in text  # the template's roles
    saved, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        pair = reward_model_inputs(tokenizer, ["Q?"], ["A."], 64)
    finally:
        tokenizer.chat_template = saved
    assert "assistant" not in tokenizer.decode(pair["input_ids"][0])


def test_relative_model_paths_are_read_from_the_files_directory(tmp_path, reward_models):
    import shutil

    shutil.copytree(reward_models / "chat", tmp_path / "models" / "rm")
    path = write(
        tmp_path,
        """
        [objectives.a]
        kind = "reward-model"
        model = "models/rm"
        [objectives.b]
        kind = "builtin"
        objective = "conciseness"
        """,
    )
    declared = read_objectives_file(path)
    assert declared.specs[0].model == str((tmp_path / "models" / "rm").resolve())


def test_a_classifier_scores_its_named_label(tmp_path):
    build_tiny_classifier(tmp_path / "tox", 2, labels=("toxic", "non-toxic"))
    path = write(
        tmp_path,
        """
        [objectives.harmless]
        kind = "classifier"
        model = "tox"
        label = "non-toxic"
        [objectives.short]
        kind = "builtin"
        objective = "conciseness"
        """,
    )
    scores = read_objectives_file(path).score(PROMPTS, RESPONSES)["harmless"]
    assert ((scores > 0) & (scores < 1)).all()
    wrong = write(tmp_path, path.read_text().replace('"non-toxic"', '"polite"'), "wrong.toml")
    with pytest.raises(
        UserError, match=r"wrong.toml: objective 'harmless': .*no label 'polite'.*toxic"
    ):
        read_objectives_file(wrong)
    unlabeled = write(tmp_path, path.read_text().replace('label = "non-toxic"\n', ""), "u.toml")
    with pytest.raises(
        UserError,
        match=r"objective 'harmless': the model has 2 labels \(toxic, non-toxic\); add label",
    ):
        read_objectives_file(unlabeled)


BAD_FILES = [
    (
        '[objectives.a]\nkind = "magic"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'a' has kind 'magic'; kinds are builtin, reward-model",
    ),
    (
        '[objectives.a]\nkind = "reward-model"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'a': reward-model needs model = ",
    ),
    (
        '[objectives.a]\nkind = "reward-model"\nmodel = "/no/such/model"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'a': model /no/such/model does not exist",
    ),
    (
        '[objectives.a]\nkind = "python"\nfunction = "no_such_module_xyz:f"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'a': function 'no_such_module_xyz:f' is not importable",
    ),
    (
        '[objectives.a]\nkind = "python"\nfunction = "json:no_such_function"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'a': module json has no function 'no_such_function'",
    ),
    (
        '[objectives.a]\nkind = "builtin"\nobjective = "positivity"\n[objectives.a]\nkind = "builtin"\n',
        r"is not valid TOML \(Cannot declare \('objectives', 'a'\) twice",
    ),
    (
        '[objectives.a]\nkind = "builtin"\nobjective = "positivity"\n',
        r"declare at least two objectives",
    ),
    (
        '[objectives.a]\nkind = "builtin"\nobjective = "nope"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'a': unknown objective 'nope'; available objectives: ",
    ),
    (
        '[objectives.a]\nkind = "builtin"\nmodle = "x"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'a': builtin takes no key 'modle'",
    ),
    (
        '[objectives.Big]\nkind = "builtin"\n[objectives.b]\nkind = "builtin"\nobjective = "conciseness"\n',
        r"objective 'Big': a name is lower-case letters",
    ),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_a_bad_file_gets_one_sentence_naming_the_file_and_objective(tmp_path, text, message):
    path = write(tmp_path, text, "bad.toml")
    with pytest.raises(UserError, match=message) as caught:
        read_objectives_file(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_the_cli_exits_2_on_a_bad_file_and_lists_a_good_one(tmp_path, capsys):
    bad = write(tmp_path, BAD_FILES[0][0], "bad.toml")
    assert main(["objectives", "--objectives-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kind 'magic'" in err
    good = write(
        tmp_path,
        '[objectives.up]\nkind = "builtin"\nobjective = "positivity"\n'
        '[objectives.short]\nkind = "builtin"\nobjective = "conciseness"\n',
    )
    assert main(["objectives", "--objectives-file", str(good), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["up", "short"] and rows[0]["objective"] == "positivity"


def test_recorded_specs_rebuild_or_refuse_a_changed_or_missing_model(tmp_path, reward_models):
    import shutil

    shutil.copytree(reward_models / "chat", tmp_path / "rm")
    path = write(
        tmp_path,
        '[objectives.helpful]\nkind = "reward-model"\nmodel = "rm"\n'
        '[objectives.short]\nkind = "builtin"\nobjective = "conciseness"\n',
    )
    recorded = read_objectives_file(path).to_json()
    rebuilt = objectives_from_json(recorded, "the adapter in x")
    np.testing.assert_allclose(
        rebuilt.score(PROMPTS, RESPONSES)["helpful"],
        by_hand(tmp_path / "rm", PROMPTS, RESPONSES),
        atol=1e-5,
    )
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    config["note"] = "edited"
    (tmp_path / "rm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UserError,
        match=r"the adapter in x: objective 'helpful' was trained with .*rm \(\w{12}\), which now holds other files",
    ):
        objectives_from_json(recorded, "the adapter in x")
    shutil.rmtree(tmp_path / "rm")
    with pytest.raises(UserError, match=r"objective 'helpful': model .*rm does not exist"):
        objectives_from_json(recorded, "the adapter in x")


def test_an_adapter_without_recorded_specs_uses_the_registered_objectives(tmp_path):
    old = resolve_objectives(
        None, {"objectives": ["positivity", "conciseness"]}, ("positivity", "conciseness")
    )
    assert old.names == ("positivity", "conciseness")
    assert [s.kind for s in old.specs] == ["builtin", "builtin"]
    other = write(
        tmp_path,
        '[objectives.positivity]\nkind = "builtin"\n[objectives.conciseness]\nkind = "python"\n'
        'function = "json:dumps"\n',
    )
    with pytest.raises(
        UserError,
        match=r"was trained with objective 'conciseness' as .*builtin.*, but .* declares .*python",
    ):
        resolve_objectives(
            str(other), {"objectives": ["positivity", "conciseness"]}, ("positivity", "conciseness")
        )


def test_cache_keys_keep_builtin_names_and_separate_declared_models():
    assert ObjectiveSpec("positivity", "builtin").cache_key == "positivity"
    a = ObjectiveSpec("helpful", "reward-model", model="/m/a", sha256="1" * 64)
    b = ObjectiveSpec("helpful", "reward-model", model="/m/b", sha256="2" * 64)
    assert a.cache_key != b.cache_key and a.cache_key.startswith("helpful-")


def test_a_declared_template_writes_the_pair_as_the_model_was_trained_to_read_it(
    tmp_path, reward_models
):
    path = write(
        tmp_path,
        f"""
        [objectives.helpful]
        kind = "reward-model"
        model = "{reward_models / "pair"}"
        template = "\\n\\nHuman: {{prompt}}\\n\\nAssistant: {{response}}"
        [objectives.short]
        kind = "builtin"
        objective = "conciseness"
        """,
    )
    scores = read_objectives_file(path).score(PROMPTS, RESPONSES)["helpful"]
    texts = [f"\n\nHuman: {p}\n\nAssistant: {r}" for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    # the template's text alone, as the model's tokenizer reads one text (no second segment)
    np.testing.assert_allclose(
        scores, by_hand(reward_models / "pair", texts, [None] * 2), atol=1e-5
    )
    bad = write(tmp_path, path.read_text().replace("{response}", "{answer}"), "bad.toml")
    with pytest.raises(UserError, match=r"objective 'helpful': template .* may name only"):
        read_objectives_file(bad)
