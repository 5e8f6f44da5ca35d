"""The learnability lab: the world's answers pass the real grader, teachers' error rates hold through the real sampling
stage, rejection keeps only correct traces, and a student base is built once and reused."""
import json, math, random, re
from collections import Counter

import pytest

from mixcot_nb.backends import EngineSpec, SamplingParams, make_engine
from mixcot_nb.grading import grade, grade_many
from mixcot_nb.lab import (STYLES, STUDENT_SIZES, LabTeacher, Puzzle, WorldSpec, arm_styles, build_student, count_forks,
                           dishonest_oks, find_slip, in_style, make_world, parse_puzzle, pretrain_examples, random_puzzle,
                           trail_answer, write_solution)
from mixcot_nb.problems import load_problems
from mixcot_nb.core import PAPER_PROMPT, render_prompt
from mixcot_nb.sampling import TeacherSpec, TraceStore, sample_teacher


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("lab")/"world"
    make_world(WorldSpec(n_train=400, n_test=100, seed=3), d)
    return d


def test_world_rows_load_and_grade(world):
    train, test = (load_problems("lab", path=world/f"{s}.jsonl") for s in ("train", "test"))
    assert len(train) == 400 and len(test) == 100
    assert not {p.problem for p in train} & {p.problem for p in test}
    assert {p.subject for p in train} == {"forward", "inverse"} and {p.level for p in train} == {"2", "3", "4", "5", "6"}
    verdicts = grade_many([(f"Final Answer: \\boxed{{{p.answer}}}", p.answer) for p in train + test], workers=0, progress=False)
    assert all(v.correct for v in verdicts)
    wrong = grade_many([(f"Final Answer: \\boxed{{{(int(p.answer) + 1) % 10}}}", p.answer) for p in test], workers=0, progress=False)
    assert not any(v.correct for v in wrong)


def test_inverse_answers_unique_spread_and_search_needed(world):
    answers = Counter(p.answer for p in load_problems("lab", path=world/"train.jsonl") if p.subject == "inverse")
    assert len(answers) == 10 and max(answers.values()) < 0.25 * sum(answers.values())
    for p in load_problems("lab", path=world/"train.jsonl"):
        q = parse_puzzle(p.problem)
        if q.task == "inverse":
            assert q.starts() == [int(p.answer)]
            assert count_forks(q) >= 1 and q.hint is not None


def test_world_is_deterministic_and_validated(tmp_path, world):
    make_world(WorldSpec(n_train=400, n_test=100, seed=3), tmp_path/"w")
    assert (tmp_path/"w"/"train.jsonl").read_bytes() == (world/"train.jsonl").read_bytes()
    with pytest.raises(ValueError, match="min_steps"): WorldSpec(min_steps=4, max_steps=2)
    with pytest.raises(ValueError, match="extra"): WorldSpec(n_trian=3)


@pytest.mark.parametrize("style", list(STYLES))
def test_every_style_is_correct_without_slip_and_wrong_with_one(world, style):
    rows = load_problems("lab", path=world/"train.jsonl")[:150]
    slipped = 0
    for i, p in enumerate(rows):
        q = parse_puzzle(p.problem)
        text = write_solution(q, style, random.Random(i))
        assert grade(text, p.answer).correct and in_style(text, style) and dishonest_oks(text, q) == 0, (style, text)
        slip = find_slip(q, random.Random(i))
        if slip is None: continue              # no misread changes this puzzle's answer
        slipped += 1
        assert trail_answer(q, slip) != q.answer
        text = write_solution(q, style, random.Random(i), slip)
        v = grade(text, p.answer)
        assert not v.correct and v.answer == str(trail_answer(q, slip))
        # the slip sits inside the reasoning (the wrong answer is already in the text before the final line), and the
        # checks stay honest: computed with the misread step, they pass without an `ok` after a wrong value
        assert str(trail_answer(q, slip)) in text.rsplit("\n", 1)[0]
        assert in_style(text, style) and dishonest_oks(text, q) == 0, (style, text)
    assert slipped > 0.9 * len(rows)


@pytest.fixture(scope="module")
def inverse_puzzles():
    rng = random.Random(5)
    spec = WorldSpec(min_steps=2, max_steps=5, tasks={"inverse": 1.0})
    return [random_puzzle(spec, rng, "inverse", rng.randint(2, 5)) for _ in range(300)]


def test_styles_as_designed(inverse_puzzles):
    texts = {s: [write_solution(q, s, random.Random(i)) for i, q in enumerate(inverse_puzzles)] for s in STYLES}
    mean = {s: sum(map(len, t)) / len(t) for s, t in texts.items()}
    assert 2 * mean["short"] < mean["long"] < 4 * mean["short"] and mean["large"] < mean["short"]
    assert mean["short-nocheck"] < mean["short"] and mean["long-nocheck"] < mean["long"]
    # long: a forward check per step, enumeration at forks, caught slips (at the step, or at the final check with a redo)
    long = texts["long"]
    assert all("check " in t for t in long) and all(" of " in t for t in long)   # every inverse problem forks
    at_step = sum(". undo " in t for t in long) / len(long)
    redo = sum("redo from undo" in t for t in long) / len(long)
    assert 0.15 < at_step < 0.35 and 0.15 < redo < 0.35, (at_step, redo)
    assert not any("check" in t or "redo" in t for t in texts["long-nocheck"])
    # small: some flawed steps, the same answer; short never flawed
    flawed = sum(a != b for a, b in zip(texts["small"], texts["short"])) / len(long)
    assert 0.15 < flawed < 0.4, flawed
    # one notation: every teacher's tokens are short's or long's (the bases' pretraining formats)
    chars = lambda ts: set("".join(ts))
    assert all(chars(texts[s]) <= chars(texts["short"]) | chars(texts["long"]) for s in STYLES)


def test_style_checks_and_honesty(inverse_puzzles):
    q = inverse_puzzles[0]
    short, long = (write_solution(q, s, random.Random(0)) for s in ("short", "long"))
    assert in_style(short, "short") and not in_style(short, "long") and not in_style(long, "short")
    assert not in_style("So x is 4.\nFinal Answer: \\boxed{4}", "short")
    with pytest.raises(ValueError, match="unknown lab teacher style"): in_style(short, "poetry")
    lie = re.sub(r"=(\d) ok", lambda m: f"={(int(m.group(1)) + 1) % 10} ok", short)   # the last equation made wrong
    assert dishonest_oks(lie, q) == 1
    recipe = {"teachers": [{"name": "L", "engine": {"engine": "lab", "model": "long"}},
                           {"name": "S", "engine": {"engine": "lab", "model": "short"}}],
              "roles": {"long": "L", "short": "S"}, "arms": ["long", "short", "mix-long"]}
    assert arm_styles(recipe, "mix-long") == ["long", "short"] and arm_styles(recipe, "short") == ["short"]


def test_engine_spec_builds_the_lab_teacher():
    eng = make_engine({"engine": "lab", "model": "long-nocheck", "settings": {"error_rate": 0.3, "seed": 5}})
    assert isinstance(eng, LabTeacher) and eng.settings.error_rate == 0.3
    with pytest.raises(ValueError, match="unknown lab teacher"): make_engine({"engine": "lab", "model": "huge"})
    with pytest.raises(ValueError): make_engine({"engine": "lab", "model": "short", "settings": {"error_rate": 1.5}})
    with pytest.raises(ValueError, match="batch_size"): EngineSpec(engine="lab", model="short", batch_size=4)


def test_completions_are_honest():
    q = Puzzle("forward", tuple(parse_puzzle("Digits mod 10: start at 4, then +3, *7, ^2. What is the result?").ops), start=4)
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": render_prompt(PAPER_PROMPT, q.text)}]
    words = LabTeacher("small", {"tokens": "words", "error_rate": 0.0})
    c = words.generate([conv], SamplingParams())[0][0]
    assert c.completion_tokens == len(c.text.split()) + 1 and c.finish_reason == "stop"
    assert c.prompt_tokens == sum(len(m["content"].split()) for m in conv)
    inv = [{"role": "user", "content": "Digits mod 10: start at x (x is odd), then *8, *2, *9, and the result is 6. What is x?"}]
    c = LabTeacher("long", {"error_rate": 0.0}).generate([inv], SamplingParams(stop=["check"]))[0][0]
    assert "check" not in c.text and c.text.startswith("Back from 6.") and c.finish_reason == "stop"
    bad = LabTeacher("short").generate([[{"role": "user", "content": "What is 1+1?"}]], SamplingParams())[0][0]
    assert not grade(bad.text, "2").correct
    with pytest.raises(ValueError, match="conversation 0"): LabTeacher("short").generate([[]], SamplingParams())


def test_sampling_is_reproducible_and_varied():
    conv = [{"role": "user", "content": render_prompt(PAPER_PROMPT, "Digits mod 10: start at 4, then +3, *7, ^2. What is the result?")}]
    conv = [{"role": "user", "content": "Digits mod 10: start at x (x is odd), then *8, *2, *9, and the result is 6. What is x?"}]
    t = LabTeacher("long", {"error_rate": 0.5, "seed": 2})
    a = [c.text for c in t.generate([conv], SamplingParams(n=8, temperature=0.7, seed=1))[0]]
    b = [c.text for c in LabTeacher("long", {"error_rate": 0.5, "seed": 2}).generate([conv], SamplingParams(n=8, temperature=0.7, seed=1))[0]]
    assert a == b and len(set(a)) > 2


@pytest.mark.parametrize("style,rate", [("short", 0.1), ("long", 0.3), ("small", 0.25)])
def test_error_rate_through_the_sampling_stage(world, tmp_path, style, rate):
    problems = load_problems("lab", path=world/"train.jsonl")
    t = TeacherSpec(name=style, engine={"engine": "lab", "model": style, "settings": {"error_rate": rate, "seed": 7}},
                    sampling=SamplingParams(temperature=0.7, seed=11, max_tokens=4096), max_attempts=4)
    stats = sample_teacher(t, problems, TraceStore(tmp_path), progress=False, grade_workers=0)
    traces = TraceStore(tmp_path).read(style)
    measured = 1 - sum(tr.correct for tr in traces) / len(traces)
    assert abs(measured - rate) < 4 * math.sqrt(rate * (1 - rate) / len(traces)), (measured, rate, len(traces))
    assert stats.unsolved <= max(3, 4 * len(problems) * rate ** 4)
    assert all(tr.completion_tokens == len(tr.response) + 1 and tr.finish_reason == "stop" for tr in traces)
    # rejection: the correct traces are exactly those whose box holds the reference answer; one per solved problem
    gold = {p.id: p.answer for p in problems}
    assert all(tr.correct == (tr.answer == gold[tr.problem_id]) for tr in traces)
    kept = Counter(tr.problem_id for tr in traces if tr.correct)
    assert set(kept.values()) == {1} and len(kept) == stats.solved


def test_teachers_err_independently(world):
    "Two styles with the same error rate and seed slip on different problems (the sample key includes the style)."
    problems = load_problems("lab", path=world/"train.jsonl")
    convs = [[{"role": "user", "content": render_prompt(PAPER_PROMPT, p.problem)}] for p in problems]
    wrong = {}
    for style in ("long", "short"):
        comps = LabTeacher(style, {"error_rate": 0.3, "seed": 0}).generate(convs, SamplingParams(temperature=0.7, seed=1))
        wrong[style] = {p.id for p, c in zip(problems, comps) if not grade(c[0].text, p.answer).correct}
    both, n = len(wrong["long"] & wrong["short"]), len(problems)
    expected = len(wrong["long"]) * len(wrong["short"]) / n       # independence: 0.09 n
    assert abs(both - expected) < 4 * math.sqrt(expected), (both, expected)
    assert both < 0.8 * min(len(wrong["long"]), len(wrong["short"]))


def test_student_base_built_once_and_reused(world, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = build_student("xs", world, tmp_path/"xs", pretrain_steps=8, pretrain_examples_n=300, progress=False)
    info = json.loads((path/"mixcot_lab.json").read_text())
    stamp = (path/"model.safetensors").stat().st_mtime_ns
    assert build_student("xs", world, tmp_path/"xs", pretrain_steps=8, pretrain_examples_n=300, progress=False) == path
    assert (path/"model.safetensors").stat().st_mtime_ns == stamp          # reused, not rebuilt
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "qwen2" and info["params"] == sum(p.numel() for p in model.parameters())
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True) \
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert all(len(tok.decode([i])) == 1 for i in tok("0123456789").input_ids)
    # the same recipe gives the same weights, bit for bit, in another folder
    again = build_student("xs", world, tmp_path/"xs-again", pretrain_steps=8, pretrain_examples_n=300, progress=False)
    assert (again/"model.safetensors").read_bytes() == (path/"model.safetensors").read_bytes()
    # a changed recipe rebuilds in place
    build_student("xs", world, tmp_path/"xs", pretrain_steps=9, pretrain_examples_n=300, progress=False)
    assert json.loads((path/"mixcot_lab.json").read_text())["recipe"]["pretrain_steps"] == 9
    with pytest.raises(ValueError, match="unknown student size"): build_student("xxl", world, tmp_path/"x")
    with pytest.raises(ValueError, match="pretrain_format"): build_student("xs", world, tmp_path/"x", pretrain_format="poetry")


def test_pretraining_sees_no_training_or_test_problem(world):
    pairs = pretrain_examples(world, n=500, prompt="{problem}")
    used = {r.problem for s in ("train", "test") for r in load_problems("lab", path=world/f"{s}.jsonl")}
    assert len({p for p, _ in pairs}) == 500 and not {p for p, _ in pairs} & used
    assert {parse_puzzle(p).level for p, _ in pairs} == {1, 2, 3} and {parse_puzzle(p).task for p, _ in pairs} == {"forward"}
    assert all(grade(r, str(parse_puzzle(p).answer)).correct for p, r in pairs)
    mixed = pretrain_examples(world, "short", n=400, levels=[1, 2, 3, 4], tasks=["forward", "inverse"], prompt="{problem}",
                              inverse_levels=[1, 2], long_share=0.2)
    inverse = [(parse_puzzle(p), r) for p, r in mixed if parse_puzzle(p).task == "inverse"]
    assert {parse_puzzle(p).level for p, _ in mixed if parse_puzzle(p).task == "forward"} == {1, 2, 3, 4}
    assert {q.level for q, _ in inverse} <= {1, 2}
    longs = sum(in_style(r, "long") for _, r in inverse)
    assert abs(longs / len(mixed) - 0.2) < 0.07 and all(in_style(r, "short") for _, r in inverse if not in_style(r, "long"))


def test_student_sizes_grow():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    counts = []
    for size, c in STUDENT_SIZES.items():
        cfg = Qwen2Config(vocab_size=384, hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                          num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                          num_key_value_heads=c["num_heads"], tie_word_embeddings=True)
        counts.append(sum(p.numel() for p in Qwen2ForCausalLM(cfg).parameters()))
    assert len(counts) >= 4 and counts == sorted(counts) and counts[-1] > 20 * counts[0]
    print(dict(zip(STUDENT_SIZES, counts)))


def test_shipped_bases_are_rebuilt_bit_for_bit_and_copied_by_a_run(tmp_path):
    "`tools/lab_bases.py` pretrains a recipe's bases from scratch into the cache; a rebuild matches them; a run copies them."
    import subprocess, sys, yaml
    from pathlib import Path
    from mixcot_nb.core import load_recipe
    from mixcot_nb.pipeline import ExperimentRecipe, run_experiment
    root = Path(__file__).parents[1]
    recipe = yaml.safe_load((root/"recipes/lab/quick.yaml").read_text())
    recipe.update(run_dir=str(tmp_path/"run"), students=[{"name": "tiny", "build": {
        "size": "xxs", "pretrain_steps": 6, "pretrain_examples_n": 200, "prompt": "{problem}", "cache_dir": str(tmp_path/"bases")}}])
    recipe["world"].update(n_train=60, n_test=10)
    recipe["problems"]["path"] = str(tmp_path/"run/world/train.jsonl")
    recipe["eval"]["data"] = {"lab": str(tmp_path/"run/world/test.jsonl")}
    (tmp_path/"exp.yaml").write_text(yaml.safe_dump(recipe))
    tool = lambda *a: subprocess.run([sys.executable, str(root/"tools/lab_bases.py"), str(tmp_path/"exp.yaml"), *a],
                                     capture_output=True, text=True, cwd=tmp_path)
    first = tool("--write")
    assert first.returncode == 0 and "missing from the cache" in first.stdout, first.stderr
    again = tool()                                                  # pretrained from scratch again, compared
    assert again.returncode == 0 and "identical" in again.stdout, again.stdout + again.stderr
    [shipped] = (tmp_path/"bases").iterdir()
    run_experiment(load_recipe(tmp_path/"exp.yaml", ExperimentRecipe), only=["world", "base:tiny"], progress=False)
    base = tmp_path/"run/bases/tiny"
    assert (base/"mixcot_lab.json").read_text() == (shipped/"mixcot_lab.json").read_text()   # copied: the same build record
    assert (base/"model.safetensors").read_bytes() == (shipped/"model.safetensors").read_bytes()
