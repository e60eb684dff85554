import dataclasses
import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from steering.errors import UserError
from steering.evaluation.evaluate import EvaluateConfig, evaluate
from steering.evaluation.quality import CATEGORIES
from steering.objectives import fit_calibration, load_calibration, score


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"prompt": "Describe a quiet morning."}\n{"prompt": "Review a bicycle."}\n')
    return path


def test_sweep_writes_the_documented_schema(tiny_env, prompts_file, tmp_path):
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts_file),
        ("clp", "logits", "base"),
        grid=0.5,
        out=str(out),
        max_new_tokens=4,
        bootstrap=100,
    )
    summary = evaluate(config)
    results = json.loads(out.read_text())
    assert results["objectives"] == ["positivity", "conciseness"]
    assert results["reference_point"] == [-2.0, -2.0]
    assert set(results["methods"]) == {"clp", "logits", "base"}
    for method in results["methods"].values():
        # two objectives at step 0.5: (0, 1), (0.5, 0.5), (1, 0)
        assert [p["weights"] for p in method["points"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
        assert method["hypervolume"] >= 0.0
        assert set(method["steerability"]) == {"positivity", "conciseness"}
        assert all(-1.0 <= r <= 1.0 for r in method["steerability"].values())
    assert set(results["dominance"]["clp"]) == {"logits", "base"}
    assert out.with_suffix(".html").is_file() and out.with_suffix(".png").is_file()
    assert "| clp |" in summary and "hypervolume differences" in summary
    # a second run reuses the cached generations and gives the same numbers
    evaluate(config)
    assert json.loads(out.read_text()) == results


def test_the_results_hold_answer_quality_and_intervals(tiny_env, prompts_file, tmp_path):
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts_file), ("clp", "base"), grid=0.5, out=str(out), max_new_tokens=4, bootstrap=50
    )
    evaluate(config)
    results = json.loads(out.read_text())
    assert results["bootstrap"] == {
        "unit": "prompt",
        "resamples": 50,
        "seed": 0,
        "confidence": 0.95,
    }
    for method in results["methods"].values():
        for quality in [method["quality"]] + [p["quality"] for p in method["points"]]:
            assert list(quality) == list(CATEGORIES)
            assert all(0.0 <= share <= 1.0 for share in quality.values())
            assert quality["degenerate"] == quality["empty"] + quality["short"]
        # fluency is a mean clamped log-probability, in [-20, 0]
        assert all(-20.0 <= p["fluency"] <= 0.0 for p in method["points"])
        found = method["intervals"]
        names = ("hypervolume", "degenerate", "unfinished", "off_topic", "offer", "fluency")
        claims = [found[name] for name in names]
        claims += [found["tokens"], *found["steerability"].values()]
        # two prompts: a resample is both of them (half the time, giving the estimate) or one
        # twice, so the interval runs from the smallest to the largest of three values
        assert all(c["lower"] <= c["estimate"] <= c["upper"] for c in claims)
        assert found["hypervolume"]["estimate"] == pytest.approx(method["hypervolume"])
        assert 1.0 <= found["tokens"]["lower"] and found["tokens"]["upper"] <= 4.0
        assert 0.0 <= found["degenerate"]["lower"] and found["unfinished"]["upper"] <= 1.0
    share = results["dominance_intervals"]["clp"]["base"]
    assert share["estimate"] == pytest.approx(results["dominance"]["clp"]["base"])
    assert 0.0 <= share["lower"] <= share["estimate"] <= share["upper"] <= 1.0
    (pair,) = results["hypervolume_differences"]
    assert (pair["a"], pair["b"]) == ("clp", "base")
    assert pair["lower"] <= pair["estimate"] <= pair["upper"]
    assert pair["winner"] in ("clp", "base", None)


@pytest.mark.parametrize("dropped", [("fluency",), ("similarity",), ("fluency", "similarity")])
def test_cached_rows_without_answer_scores_are_scored_on_resume(
    tiny_env, prompts_file, tmp_path, dropped
):
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts_file), ("base",), grid=0.5, out=str(out), max_new_tokens=4, bootstrap=10
    )
    evaluate(config)
    results = json.loads(out.read_text())
    cache = out.with_suffix(".cache.jsonl")
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    # every answer's MiniLM cosine to its prompt, what off_topic is counted by
    similarity = score(["relevance"], [r["prompt_text"] for r in rows], [r["text"] for r in rows])
    assert [r["similarity"] for r in rows] == pytest.approx(list(similarity["relevance"]))
    # a cache written before answers were scored for fluency or similarity
    cache.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k not in dropped}) + "\n" for r in rows)
    )
    evaluate(config)
    appended = [json.loads(line) for line in cache.read_text().splitlines()][len(rows) :]
    # every row scored again, to the same values (MiniLM's to float precision: its batches differ)
    assert [r["similarity"] for r in appended] == pytest.approx([r["similarity"] for r in rows])
    others = [{k: v for k, v in r.items() if k != "similarity"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "similarity"} for r in appended] == others
    assert json.loads(out.read_text()) == results


def test_cached_rows_are_reused_only_for_the_same_adapter_and_prompt(
    tiny_env, prompts_file, tmp_path, monkeypatch
):
    adapters = tmp_path / "adapters"
    shutil.copytree(tiny_env / "adapters", adapters)
    monkeypatch.setenv("STEERING_ADAPTERS", str(adapters))
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts_file), ("clp",), grid=0.5, out=str(out), max_new_tokens=4, bootstrap=10
    )
    evaluate(config)
    cache = out.with_suffix(".cache.jsonl")
    first = [json.loads(line) for line in cache.read_text().splitlines()]
    # the prompts file reordered, with one prompt replaced: only the new prompt is generated
    prompts_file.write_text(
        '{"prompt": "Name a river."}\n{"prompt": "Describe a quiet morning."}\n'
    )
    evaluate(config)
    added = [json.loads(line) for line in cache.read_text().splitlines()][len(first) :]
    assert {r["prompt_text"] for r in added} == {"Name a river."}
    assert len(added) == 3  # one row per grid point
    # retrained adapters (another adapter file) make every row again
    adapter = adapters / "clp" / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes())  # same bytes, so the same setting: nothing new
    evaluate(config)
    assert len(cache.read_text().splitlines()) == len(first) + 3
    bank = load_file(adapter)
    save_file({name: tensor + 0.01 for name, tensor in bank.items()}, adapter)
    evaluate(config)
    remade = [json.loads(line) for line in cache.read_text().splitlines()][len(first) + 3 :]
    assert len(remade) == 6 and len({r["setting"] for r in remade}) == 1
    assert remade[0]["setting"] != first[0]["setting"]
    # the decoding floor is part of the setting too
    evaluate(dataclasses.replace(config, min_words=3))
    floored = [json.loads(line) for line in cache.read_text().splitlines()][len(first) + 9 :]
    assert len(floored) == 6 and floored[0]["setting"] != remade[0]["setting"]
    assert json.loads(out.read_text())["min_words"] == 3


def test_a_sweep_killed_mid_row_resumes(tiny_env, prompts_file, tmp_path):
    out = tmp_path / "results.json"
    config = EvaluateConfig(str(prompts_file), ("base",), grid=0.5, out=str(out), max_new_tokens=4)
    evaluate(config)
    cache = out.with_suffix(".cache.jsonl")
    whole = cache.read_text().splitlines()
    cache.write_text("\n".join(whole[:-1]) + "\n" + whole[-1][:20])  # the last row torn
    evaluate(config)
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    keys = sorted((r["point"], r["prompt"], r["sample"]) for r in rows)
    assert keys == sorted((r["point"], r["prompt"], r["sample"]) for r in map(json.loads, whole))
    assert len(json.loads(out.read_text())["methods"]["base"]["points"]) == 3


def test_a_resumed_sweep_draws_the_samples_of_an_uninterrupted_one(
    tiny_env, prompts_file, tmp_path
):
    def sweep(out):
        config = EvaluateConfig(
            str(prompts_file), ("base",), grid=0.5, out=str(out), max_new_tokens=6, rows_per_batch=2
        )
        evaluate(config)
        lines = out.with_suffix(".cache.jsonl").read_text().splitlines()
        return {(r["point"], r["prompt"]): r["text"] for r in map(json.loads, lines)}

    whole = sweep(tmp_path / "whole.json")
    # the same sweep interrupted after its first row: every later batch boundary is one row off
    # from where a sweep of only the remaining rows would cut it
    cut = tmp_path / "cut.json"
    cut.with_suffix(".cache.jsonl").write_text(
        (tmp_path / "whole.cache.jsonl").read_text().splitlines()[0] + "\n"
    )
    assert sweep(cut) == whole
    assert len(set(whole.values())) > 1  # sampled answers that differ, so the check has teeth


def test_steerability_per_prompt_category_is_the_sweep_of_that_category_alone(tiny_env, tmp_path):
    lines = [
        ('{"prompt": "Describe a quiet morning.", "category": "description"}', "description"),
        ('{"prompt": "Review a bicycle."}', None),
        ('{"prompt": "Describe a busy harbour.", "category": "description"}', "description"),
        ('{"prompt": "Write a poem about rain.", "category": "poem"}', "poem"),
    ]
    prompts = tmp_path / "eval.jsonl"
    prompts.write_text("".join(line + "\n" for line, _ in lines))
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts), ("clp", "base"), grid=0.5, out=str(out), max_new_tokens=4, bootstrap=10
    )
    summary = evaluate(config)
    results = json.loads(out.read_text())
    # categories in the order they first appear; the uncategorised prompt is in none
    assert results["categories"] == {"description": 2, "poem": 1}
    assert "| description (2) |" in summary and "| poem (1) |" in summary
    cache = out.with_suffix(".cache.jsonl")
    generated = len(cache.read_text().splitlines())
    for category in results["categories"]:
        # the same sweep over that category's prompts only: every row comes from the cache
        alone = tmp_path / f"{category}.jsonl"
        alone.write_text("".join(line + "\n" for line, c in lines if c == category))
        evaluate(dataclasses.replace(config, prompts=str(alone)))
        assert len(cache.read_text().splitlines()) == generated
        for method, found in json.loads(out.read_text())["methods"].items():
            by_category = results["methods"][method]["steerability_by_category"][category]
            assert by_category == pytest.approx(found["steerability"])
            # and the sweep of one category has that one category
            assert list(found["steerability_by_category"]) == [category]


def test_a_prompt_file_without_categories_reports_none(tiny_env, prompts_file, tmp_path):
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts_file), ("base",), grid=0.5, out=str(out), max_new_tokens=4, bootstrap=10
    )
    summary = evaluate(config)
    results = json.loads(out.read_text())
    assert results["categories"] == {}
    assert results["methods"]["base"]["steerability_by_category"] == {}
    assert "by prompt category" not in summary


@pytest.fixture
def brevity_calibration(tmp_path):
    """A calibration of positivity and brevity (the tiny adapters calibrate conciseness)."""
    rng = np.random.default_rng(1)
    path = tmp_path / "calibration.json"
    fit_calibration({o: rng.normal(size=16) for o in ("positivity", "brevity")}).save(path)
    return path


def test_score_with_scores_cached_answers_again_instead_of_generating(
    tiny_env, prompts_file, tmp_path, brevity_calibration
):
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts_file), ("clp", "base"), grid=0.5, out=str(out), max_new_tokens=4, bootstrap=10
    )
    evaluate(config)
    cache = out.with_suffix(".cache.jsonl")
    # answers no sweep generates: rows scored with --score-with can only have come from here
    own = [
        {**row, "text": f"A calm answer, number {i}."}
        for i, row in enumerate(map(json.loads, cache.read_text().splitlines()))
    ]
    cache.write_text("".join(json.dumps(row) + "\n" for row in own))
    scored = dataclasses.replace(
        config, score_with="positivity,brevity", calibration=str(brevity_calibration)
    )
    summary = evaluate(scored)
    rescored = [json.loads(line) for line in cache.read_text().splitlines()][len(own) :]
    assert len(rescored) == len(own) == 2 * 3 * 2  # methods x grid points x prompts, none new
    assert [r["text"] for r in rescored] == [r["text"] for r in own]
    assert len({r["setting"] for r in rescored} - {r["setting"] for r in own}) == 2
    expected = score(
        ["positivity", "brevity"], [r["prompt_text"] for r in own], [r["text"] for r in own]
    )
    for name in ("positivity", "brevity"):
        assert [r["raw"][name] for r in rescored] == pytest.approx(list(expected[name]))
    results = json.loads(out.read_text())
    assert results["objectives"] == ["positivity", "brevity"]
    assert [s["name"] for s in results["objective_specs"]] == ["positivity", "brevity"]
    clp = results["methods"]["clp"]
    assert clp["steers"] == ["positivity", "conciseness"]
    # every point's reward is the mean z-score under the calibration given
    brevity = load_calibration(brevity_calibration).stats["brevity"]
    first = [r["raw"]["brevity"] for r in rescored if r["method"] == "clp" and r["point"] == 0]
    mean = (np.mean(first) - brevity.mean) / brevity.std
    assert clp["points"][0]["rewards"]["brevity"] == pytest.approx(mean)
    assert summary.startswith(
        "scored with positivity, brevity: clp steers positivity, conciseness; "
        "base steers positivity, conciseness"
    )
    # scored once: a second run reads the rescored rows
    evaluate(scored)
    assert len(cache.read_text().splitlines()) == 2 * len(own)


def test_score_with_reuses_part_of_an_own_sweep_and_generates_the_rest_alike(
    tiny_env, prompts_file, tmp_path, brevity_calibration
):
    def answers(out):
        rows = map(json.loads, out.with_suffix(".cache.jsonl").read_text().splitlines())
        return {(r["method"], r["point"], r["prompt"]): r["text"] for r in rows}

    config = EvaluateConfig(
        str(prompts_file), ("clp",), grid=0.5, max_new_tokens=6, bootstrap=10, rows_per_batch=2
    )
    evaluate(dataclasses.replace(config, out=str(tmp_path / "own.json")))
    whole = answers(tmp_path / "own.json")
    assert len(set(whole.values())) > 1  # sampled answers that differ, so the check has teeth
    # an own sweep interrupted after three of its six rows, continued with --score-with
    scored = tmp_path / "scored.json"
    own_rows = [
        {**json.loads(line), "text": f"A kept answer, number {i}."}  # none a sweep generates
        for i, line in enumerate((tmp_path / "own.cache.jsonl").read_text().splitlines()[:3])
    ]
    scored.with_suffix(".cache.jsonl").write_text("".join(json.dumps(r) + "\n" for r in own_rows))
    evaluate(
        dataclasses.replace(
            config,
            out=str(scored),
            score_with="positivity,brevity",
            calibration=str(brevity_calibration),
        )
    )
    rows = [
        json.loads(line) for line in scored.with_suffix(".cache.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 3 + 6  # the three scored again, the other three generated
    assert [r["text"] for r in rows[3:6]] == [r["text"] for r in own_rows]
    generated = {(r["point"], r["prompt"]): r["text"] for r in rows[6:]}
    assert generated == {key[1:]: whole[key] for key in whole if key[1:] in generated}
    assert len(generated) == 3
    assert all(set(r["raw"]) == {"positivity", "brevity"} for r in rows[3:])


def test_methods_steering_other_objectives_compare_only_when_scored_alike(
    tiny_env, prompts_file, tmp_path, monkeypatch, brevity_calibration
):
    adapters = tmp_path / "adapters"
    shutil.copytree(tiny_env / "adapters", adapters)
    monkeypatch.setenv("STEERING_ADAPTERS", str(adapters))
    # soups relabelled to steer brevity: the same weights, trained (it says) on another reward
    record = adapters / "soups" / "adapter.json"
    record.write_text(record.read_text().replace("conciseness", "brevity"))
    out = tmp_path / "results.json"
    config = EvaluateConfig(
        str(prompts_file), ("clp", "soups"), grid=0.5, out=str(out), max_new_tokens=4, bootstrap=10
    )
    message = "method soups steers positivity, brevity, not positivity, conciseness; give --score"
    with pytest.raises(UserError, match=message):
        evaluate(config)
    message = "calibration of the clp adapter has no statistics for objective 'brevity'"
    with pytest.raises(UserError, match=message):
        evaluate(dataclasses.replace(config, score_with="positivity,brevity"))
    elsewhere = str(adapters / "clp")
    with pytest.raises(UserError, match=f"calibration of {elsewhere} has no statistics"):
        evaluate(
            dataclasses.replace(config, score_with="positivity,brevity", calibration=elsewhere)
        )
    assert not out.with_suffix(".cache.jsonl").exists()  # refused before generating anything
    scored = dataclasses.replace(
        config, score_with="positivity,brevity", calibration=str(brevity_calibration)
    )
    summary = evaluate(scored)
    results = json.loads(out.read_text())
    assert results["methods"]["soups"]["steers"] == ["positivity", "brevity"]
    assert results["methods"]["clp"]["steers"] == ["positivity", "conciseness"]
    assert set(results["dominance"]) == {"clp", "soups"}
    assert "clp steers positivity, conciseness" in summary and "soups steers" not in summary
    # the same objectives from a TOML file, or chosen by name from a configured one (that
    # declares more, and that neither adapter was trained with): the same scores, none made again
    declared = tmp_path / "objectives.toml"
    declared.write_text(
        "".join(
            f'[objectives.{n}]\nkind = "builtin"\n'
            for n in ("conciseness", "brevity", "positivity")
        )
    )
    lines = len(out.with_suffix(".cache.jsonl").read_text().splitlines())
    short = tmp_path / "two.toml"
    short.write_text(
        '[objectives.positivity]\nkind = "builtin"\n[objectives.brevity]\nkind = "builtin"\n'
    )
    for other in (
        dataclasses.replace(scored, score_with=str(short)),
        dataclasses.replace(scored, objectives_file=str(declared)),
    ):
        evaluate(other)
        assert len(out.with_suffix(".cache.jsonl").read_text().splitlines()) == lines
        assert json.loads(out.read_text()) == results


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        ('{"prompt": "hi"}\n', {"methods": ("clp", "magic")}, "method 'magic' is unknown"),
        ("", {}, "holds no prompts"),
        ('{"prompt": "hi"}\nnot json\n', {}, "line 2 is not valid JSON"),
        ('{"prompt": "hi"}\n{"text": "hi"}\n', {}, 'line 2 has no non-empty "prompt"'),
        ('{"prompt": "hi"}\n', {"grid": 0.3}, "grid step 0.3 does not divide 1"),
        ('{"prompt": "hi", "category": 3}\n', {}, 'line 1 has a "category" that is not'),
        ('{"prompt": "hi"}\n', {"score_with": "positivity"}, "declare at least two objectives"),
        ('{"prompt": "hi"}\n', {"score_with": " , "}, "--score-with names no objective"),
        ('{"prompt": "hi"}\n', {"score_with": "positivity,nonsense"}, "unknown objective 'nons"),
        (
            '{"prompt": "hi"}\n',
            {"score_with": "positivity,conciseness,brevity"},
            r"method base steers 2 objectives \(positivity, conciseness\), but --score-with gives 3",
        ),
        ('{"prompt": "hi"}\n', {"score_with": "missing.toml"}, "objectives file missing.toml"),
        ('{"prompt": "hi"}\n', {"calibration": "nowhere"}, "no calibration file at nowhere"),
    ],
)
def test_bad_input_is_one_sentence(tiny_env, tmp_path, content, overrides, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    config = EvaluateConfig(
        str(path), **{"methods": ("base",), "out": str(tmp_path / "r.json"), **overrides}
    )
    with pytest.raises(UserError, match=message):
        evaluate(config)
