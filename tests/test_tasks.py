"""Tests of rlhf_edu.tasks: the review task (gold reward, simulated feedback) and the arithmetic task."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_edu.tasks import (
    ALPHABET,
    MAX_COMPLETION_CHARS,
    MAX_PROMPT_CHARS,
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    VOCABULARY,
    ArithmeticTask,
    SentimentTask,
    accuracy_reward,
    bradley_terry_choice,
    exact_match,
    format_reward,
    gold_reward,
    gold_reward_breakdown,
    in_alphabet,
    reward,
    solve,
    to_records,
)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def binomial_ok(successes, n, p, z=4.5):
    """True when ``successes`` out of ``n`` is within z standard deviations of ``n p``."""
    return abs(successes - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1


@pytest.fixture(scope="module")
def task():
    return SentimentTask(seed=0)


# ------------------------------------------------------------------------------------------------------
# gold reward
# ------------------------------------------------------------------------------------------------------
def test_gold_reward_worked_examples():
    g = gold_reward([" great fun.", " great but dull.", " dull and boring.",
                     " very good and the plot was nice."])
    np.testing.assert_allclose(g, [sigmoid(2), 0.5, sigmoid(-2), sigmoid(2)], rtol=1e-12)
    assert g[0] == pytest.approx(0.8808, abs=1e-4)
    # no leading space, other punctuation and case of words are all handled the same way
    assert gold_reward(["great fun."])[0] == pytest.approx(sigmoid(2))
    # each defect halves the sentiment term
    g = gold_reward([" great great great great.", " great fun", " great grreat.", " grreat.", "", "."])
    np.testing.assert_allclose(g, [sigmoid(1) / 8, sigmoid(2) / 2, sigmoid(1) / 2, 0.0, 0.0, 0.0], rtol=1e-12)
    # 10 words, 2 over the budget of 8
    ten = " good and the plot was quite slow and very long."
    b = gold_reward_breakdown([ten])
    assert int(b["excess_words"][0]) == 2 and int(b["defects"][0]) == 2
    assert b["gold"][0] == pytest.approx(sigmoid(0) * 0.25)


def test_gold_reward_options_and_breakdown_identity():
    texts = [" great great fun", " bad and dull.", " the plot was xyz and good good."]
    for decay in (0.0, 0.3, 1.0):
        b = gold_reward_breakdown(texts, decay=decay)
        np.testing.assert_allclose(b["gold"], b["sentiment"] * decay ** b["defects"].astype(float))
        np.testing.assert_array_equal(b["defects"], b["repeats"] + b["unknown"] + b["excess_words"]
                                      + b["missing_period"])
        np.testing.assert_allclose(gold_reward(texts, decay=decay), b["gold"])
    # decay=1 switches the defects off: only the distinct-word sentiment remains
    np.testing.assert_allclose(gold_reward(texts, decay=1.0), [sigmoid(2), sigmoid(-2), sigmoid(1)])
    assert gold_reward([" good and the plot was quite slow and very long."], max_words=10)[0] == 0.5


def test_hacks_score_lower_than_a_clean_positive_review():
    clean = " great and lovely."
    hacks = [
        " great great lovely lovely.",  # repetition of opinion words
        " great and lovely and great and lovely.",  # repetition in a longer phrase
        " great and lovely",  # cut off: no final period
        " great and lovely and the plot was nice and cool and sweet.",  # rambling past 8 words
        " great and lovelyyy.",  # a non-word
        " greatgreatgreat.",  # one long non-word
    ]
    g_clean = gold_reward([clean])[0]
    g_hacks = gold_reward(hacks)
    assert g_clean == pytest.approx(sigmoid(2))
    assert np.all(g_hacks < g_clean), dict(zip(hacks, g_hacks))


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_gold_reward_in_unit_interval_for_any_text(text):
    g = gold_reward([text])
    assert g.shape == (1,) and g.dtype == np.float64
    assert 0.0 <= g[0] <= 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(sorted(VOCABULARY)), min_size=1, max_size=12), st.booleans())
def test_gold_reward_formula_on_vocabulary_sentences(words, period):
    text = " " + " ".join(words) + ("." if period else "")
    pos = len(set(words) & set(POSITIVE_WORDS))
    neg = len(set(words) & set(NEGATIVE_WORDS))
    polar = [w for w in words if w in POSITIVE_WORDS or w in NEGATIVE_WORDS]
    defects = (len(polar) - len(set(polar))) + max(0, len(words) - 8) + (not period)
    assert gold_reward([text])[0] == pytest.approx(sigmoid(pos - neg) * 0.5**defects, rel=1e-12)


def test_gold_reward_input_errors():
    assert gold_reward([]).shape == (0,)
    with pytest.raises(TypeError, match="completions"):
        gold_reward(" great fun.")  # a bare string would be read character by character
    with pytest.raises(TypeError, match=r"completions\[1\]"):
        gold_reward([" good.", 3])
    with pytest.raises(ValueError, match="prompts"):
        gold_reward([" good.", " bad."], prompts=["review: the film was"])
    with pytest.raises(ValueError, match="decay"):
        gold_reward([" good."], decay=1.5)
    with pytest.raises(ValueError, match="max_words"):
        gold_reward([" good."], max_words=0)
    # prompts are accepted and do not change the gold reward
    np.testing.assert_array_equal(gold_reward([" good."], ["review: the film was"]), gold_reward([" good."]))


# ------------------------------------------------------------------------------------------------------
# SFT data, determinism, splits, alphabet
# ------------------------------------------------------------------------------------------------------
def test_sft_corpus_is_mixed_and_defect_free(task):
    corpus = task.sft_corpus(4000, seed=0)
    completions = [c for _, c in corpus]
    b = gold_reward_breakdown(completions)
    mean_gold = float(b["gold"].mean())
    assert 0.4 <= mean_gold <= 0.5, mean_gold
    assert 0.2 < np.mean(b["positive"] > b["negative"]) < 0.45
    assert 0.2 < np.mean(b["positive"] < b["negative"]) < 0.5
    assert b["defects"].sum() == 0  # the proxy never sees a defect
    assert all(c.startswith(" ") and c.endswith(".") for c in completions)
    assert len(set(completions)) > 1000
    np.testing.assert_array_equal(task.reward(completions), b["gold"])


def test_determinism_and_independent_streams():
    a, b = SentimentTask(seed=3), SentimentTask(seed=3)
    for name, args in [("prompts", (5,)), ("sft_corpus", (5,)), ("sample_completions", (5,)),
                       ("preference_pairs", (5,)), ("k_wise_rankings", (3, 3)), ("kto_examples", (5,))]:
        first = getattr(a, name)(*args)
        assert first == getattr(b, name)(*args), name
        assert getattr(a, name)(*args) != first, f"{name}: a second call continues the stream"
        assert getattr(b, name)(*args, seed=7) == getattr(SentimentTask(seed=3), name)(*args, seed=7)
    assert SentimentTask(seed=4).sft_corpus(10) != SentimentTask(seed=3).sft_corpus(10)
    # drawing from one stream leaves the others where they were
    c = SentimentTask(seed=3)
    c.prompts(100)
    c.preference_pairs(20)
    assert c.sft_corpus(5) == SentimentTask(seed=3).sft_corpus(5)
    t1, t2 = ArithmeticTask(seed=3), ArithmeticTask(seed=3)
    assert t1.prompts(20) == t2.prompts(20) and t1.sft_corpus(20) == t2.sft_corpus(20)
    assert t1.prompts(20) != ArithmeticTask(seed=4).prompts(20)
    assert t1.prompts(20, seed=1) == t2.prompts(20, seed=1)


def test_sentiment_splits_are_disjoint(task):
    train, test = set(task.all_prompts("train")), set(task.all_prompts("test"))
    assert len(train) == 24 and len(test) == 8 and not train & test
    # every subject of the test split is seen in training (with its other verb)
    assert {p.split()[2] for p in test} <= {p.split()[2] for p in train}
    assert set(task.prompts(200, "test")) <= test
    for r in task.preference_pairs(50, split="test"):
        assert r["prompt"] in test
    assert {p for p, _ in task.sft_corpus(200)} <= train
    # test data comes from streams seeded apart from the train ones
    assert [c for _, c in task.sft_corpus(30, "test", seed=0)] != [c for _, c in task.sft_corpus(30, seed=0)]


def _all_texts(task, split):
    texts = task.prompts(50, split) + task.sample_completions(50, split)
    texts += [t for pc in task.sft_corpus(100, split) for t in pc]
    for r in task.preference_pairs(100, split=split):
        texts += [r["prompt"], r["chosen"], r["rejected"]]
    for r in task.k_wise_rankings(30, k=5, split=split):
        texts += [r["prompt"], *r["completions"]]
    texts += [t for r in task.kto_examples(100, split=split) for t in (r["prompt"], r["completion"])]
    return texts


@pytest.mark.parametrize("split", ["train", "test"])
def test_sentiment_texts_use_alphabet_and_fit_budget(task, split):
    for prompt in task.all_prompts(split):
        assert in_alphabet(prompt) and len(prompt) <= MAX_PROMPT_CHARS
    for text in _all_texts(task, split):
        assert in_alphabet(text), text
        assert len(text) <= max(MAX_PROMPT_CHARS, MAX_COMPLETION_CHARS), text
    for p, c in task.sft_corpus(500, split, seed=5):
        assert len(p) <= MAX_PROMPT_CHARS and len(c) <= MAX_COMPLETION_CHARS


def test_in_alphabet():
    assert in_alphabet("review: the film was great.") and in_alphabet("12+35=47.")
    assert not in_alphabet("Great!") and not in_alphabet("tab\t") and not in_alphabet("é")


# ------------------------------------------------------------------------------------------------------
# simulated human feedback
# ------------------------------------------------------------------------------------------------------
def test_preference_pair_records(task):
    pairs = task.preference_pairs(300)
    for r in pairs:
        assert set(r) == {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected", "chosen_first"}
        assert r["chosen"] != r["rejected"]
        assert r["gold_chosen"] == pytest.approx(task.reward([r["chosen"]])[0])
        assert r["gold_rejected"] == pytest.approx(task.reward([r["rejected"]])[0])
    # the chosen completion is the first drawn about half the time: position carries no signal
    firsts = sum(r["chosen_first"] for r in task.preference_pairs(2000, seed=1))
    assert binomial_ok(firsts, 2000, 0.5)


def _agreement(pairs):
    gc = np.array([r["gold_chosen"] for r in pairs])
    gr = np.array([r["gold_rejected"] for r in pairs])
    strict = gc != gr
    return float(np.mean(gc[strict] > gr[strict]))


def test_labels_agree_with_gold_more_as_noise_falls(task):
    by_noise = [_agreement(task.preference_pairs(1500, noise=x, seed=2)) for x in (0.4, 0.2, 0.0)]
    by_beta = [_agreement(task.preference_pairs(1500, beta=b, seed=2)) for b in (1.0, 3.0, 10.0, 100.0)]
    assert by_noise == sorted(by_noise) and by_noise[-1] - by_noise[0] > 0.25, by_noise
    assert by_beta == sorted(by_beta) and by_beta[-1] - by_beta[0] > 0.3, by_beta
    assert 0.5 < by_beta[0] < 0.7 and by_beta[-1] > 0.99
    # noiseless annotator: every strict pair agrees with gold; min_gap removes ties
    pairs = task.preference_pairs(300, beta=float("inf"), noise=0.0, min_gap=0.1, seed=2)
    assert all(r["gold_chosen"] >= r["gold_rejected"] + 0.1 for r in pairs)


def test_bradley_terry_choice_matches_sigmoid():
    n = 20000
    for beta, diff in [(10.0, 0.1), (3.0, -0.4), (1.0, 0.0)]:
        wins = bradley_terry_choice(np.full(n, 0.5 + diff), np.full(n, 0.5), beta=beta, rng=0)
        assert binomial_ok(wins.sum(), n, sigmoid(beta * diff)), (beta, diff, wins.mean())
    wins = bradley_terry_choice(np.full(n, 0.9), np.full(n, 0.1), beta=float("inf"), noise=0.25, rng=1)
    assert binomial_ok(wins.sum(), n, 0.75)
    ties = bradley_terry_choice(np.full(n, 0.3), np.full(n, 0.3), beta=float("inf"), rng=2)
    assert binomial_ok(ties.sum(), n, 0.5)
    # huge margins stay finite and certain
    assert bradley_terry_choice([1e4], [-1e4], beta=1e4, rng=0).tolist() == [True]
    with pytest.raises(ValueError, match="beta"):
        bradley_terry_choice([0.5], [0.4], beta=0.0)
    with pytest.raises(ValueError, match="noise"):
        bradley_terry_choice([0.5], [0.4], noise=0.6)
    with pytest.raises(ValueError, match="shapes"):
        bradley_terry_choice([0.5, 0.1], [0.4])


def test_label_pairs_on_own_completions(task):
    a = [" great and lovely.", " dull.", " good."]
    b = [" awful.", " superb and nice.", " good and fun."]
    recs = task.label_pairs(["review: the film was"] * 3, a, b, beta=float("inf"))
    assert [r["chosen"] for r in recs] == [a[0], b[1], b[2]]
    assert [r["chosen_first"] for r in recs] == [True, False, False]
    with pytest.raises(ValueError, match="one length"):
        task.label_pairs(["p"], a, b)


def test_k_wise_rankings(task):
    recs = task.k_wise_rankings(40, k=5, beta=float("inf"))
    for r in recs:
        assert set(r) == {"prompt", "completions", "gold"}
        assert len(r["completions"]) == 5 == len(set(r["completions"]))
        assert r["gold"] == sorted(r["gold"], reverse=True)  # best first
        np.testing.assert_allclose(task.reward(r["completions"]), r["gold"])
    # k = 2 with finite beta is the Bradley-Terry draw: P(better first) = mean sigma(beta |g_a - g_b|)
    recs = task.k_wise_rankings(3000, k=2, beta=3.0, seed=4)
    gap = np.array([abs(r["gold"][0] - r["gold"][1]) for r in recs])
    better_first = np.array([r["gold"][0] > r["gold"][1] for r in recs])
    strict = gap > 0
    expected = np.mean(1 / (1 + np.exp(-3.0 * gap[strict])))
    assert binomial_ok(better_first[strict].sum(), strict.sum(), expected)
    assert expected < 0.8  # the draw is noisy, not a sort


def test_kto_examples(task):
    recs = task.kto_examples(2000)
    assert all(set(r) == {"prompt", "completion", "label", "gold"} for r in recs)
    assert all(r["label"] == (r["gold"] > 0.5) for r in recs)
    assert 0.2 < np.mean([r["label"] for r in recs]) < 0.45
    noisy = task.kto_examples(4000, threshold=0.5, noise=0.2, seed=3)
    flipped = sum(r["label"] != (r["gold"] > 0.5) for r in noisy)
    assert binomial_ok(flipped, 4000, 0.2)
    strict = task.kto_examples(500, threshold=0.85, seed=3)
    assert all(r["label"] == (r["gold"] > 0.85) for r in strict)


def test_to_records_forms(task):
    pairs = task.preference_pairs(20, seed=5)
    pref = to_records(pairs)
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in pref)
    ab = to_records(pairs, "ab")
    for r, p in zip(ab, pairs):
        assert r[f"answer_{r['chosen']}"] == p["chosen"]
        assert r[f"answer_{3 - r['chosen']}"] == p["rejected"]
    kto = to_records(pairs, "kto")
    assert len(kto) == 40 and [r["label"] for r in kto[:2]] == [True, False]
    assert to_records(pairs, "sft")[0] == (pairs[0]["prompt"], pairs[0]["chosen"])
    with pytest.raises(ValueError, match="form"):
        to_records(pairs, "dpo")
    with pytest.raises(ValueError, match="keys"):
        to_records([{"prompt": "p", "chosen": "c"}])
    with pytest.raises(ValueError, match="empty"):
        to_records([])


def test_a_proxy_learned_from_pairs_can_be_overoptimised(task):
    """Goodhart in miniature: a bag-of-words reward model fit to the preference pairs agrees with gold on
    held-out pairs, yet ranks a repetitive review far above a clean one, which gold ranks the other way."""
    words = sorted(VOCABULARY)
    index = {w: i for i, w in enumerate(words)}

    def features(texts):
        x = np.zeros((len(texts), len(words)))
        for row, t in enumerate(texts):
            for w in t.strip(" .").split():
                x[row, index[w]] += 1.0
        return x

    pairs = task.preference_pairs(1500, seed=6)
    d = features([r["chosen"] for r in pairs]) - features([r["rejected"] for r in pairs])
    w = np.zeros(len(words))
    for _ in range(300):  # logistic regression on the Bradley-Terry likelihood, plain gradient ascent
        w += 0.5 * d.T @ (1 / (1 + np.exp(d @ w))) / len(d)
    test = task.preference_pairs(500, split="test", seed=6)
    dt = features([r["chosen"] for r in test]) - features([r["rejected"] for r in test])
    strict = np.array([abs(r["gold_chosen"] - r["gold_rejected"]) > 0.2 for r in test])
    assert np.mean(dt[strict] @ w > 0) > 0.85  # a good proxy in distribution

    clean, hacked = " great and lovely.", " great great great lovely lovely."
    proxy = features([clean, hacked]) @ w
    gold = task.reward([clean, hacked])
    assert proxy[1] > proxy[0] and gold[1] < gold[0] / 4


def test_sentiment_errors(task):
    with pytest.raises(ValueError, match="n"):
        task.prompts(0)
    with pytest.raises(TypeError, match="n"):
        task.sft_corpus(2.5)
    with pytest.raises(ValueError, match="split"):
        task.prompts(3, split="valid")
    with pytest.raises(ValueError, match="split"):
        task.all_prompts("dev")
    with pytest.raises(ValueError, match="beta"):
        task.preference_pairs(3, beta=-1.0)
    with pytest.raises(ValueError, match="noise"):
        task.preference_pairs(3, noise=0.7)
    with pytest.raises(ValueError, match="k"):
        task.k_wise_rankings(3, k=1)
    with pytest.raises(ValueError, match="threshold"):
        task.kto_examples(3, threshold=2.0)
    with pytest.raises(ValueError, match="seed"):
        task.prompts(3, seed=-1)
    with pytest.raises(ValueError, match="p_positive"):
        SentimentTask(p_positive=0.8, p_negative=0.5)
    with pytest.raises(ValueError, match="empty"):
        task.metrics([])


def test_sentiment_metrics(task):
    m = task.metrics([" great fun.", " great great."])
    assert m["gold"] == pytest.approx((sigmoid(2) + sigmoid(1) / 2) / 2)
    assert m["repeats"] == 0.5 and m["defects"] == 0.5


# ------------------------------------------------------------------------------------------------------
# arithmetic
# ------------------------------------------------------------------------------------------------------
def test_arithmetic_hand_examples():
    comps, prompts = ["71.", "17.", "seventy"], ["23+48="] * 3
    np.testing.assert_array_equal(format_reward(comps), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(accuracy_reward(comps, prompts), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(reward(comps, prompts), [1.1, 0.1, 0.0])
    np.testing.assert_allclose(reward(comps, prompts, format_weight=0.0), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(exact_match(comps, prompts), [True, False, False])
    # answer present but not in the required format: no accuracy reward (R1-Zero's rule)
    odd = ["71", "71.5", " 71. ", "071.", "7 1.", "", "71..", "+71."]
    np.testing.assert_array_equal(format_reward(odd), [0, 0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(accuracy_reward(odd, ["23+48="] * 8), [0, 0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(exact_match(odd, ["23+48="] * 8), [0, 0, 1, 0, 0, 0, 0, 0])
    assert solve("23+48=") == 71 and solve("50-7=") == 43 and solve("12*12=") == 144 and solve("3-9=") == -6
    np.testing.assert_array_equal(accuracy_reward(["-6."], ["3-9="]), [1.0])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 999), st.integers(0, 999), st.sampled_from("+-*"), st.integers(-2000, 2000))
def test_arithmetic_reward_property(a, b, op, guess):
    prompt = f"{a}{op}{b}="
    truth = a + b if op == "+" else a - b if op == "-" else a * b
    assert solve(prompt) == truth
    for completion in (f"{guess}.", f"{truth}."):
        expected = float(int(completion[:-1]) == truth) + 0.1
        assert reward([completion], [prompt])[0] == pytest.approx(expected)
    assert reward([f"{truth}"], [prompt])[0] == 0.0


def test_arithmetic_task_corpus_and_split():
    task = ArithmeticTask(seed=0)
    train, test = task.all_prompts("train"), task.all_prompts("test")
    assert len(train) + len(test) == 90 * 90 and not set(train) & set(test)
    assert task.num_problems("test") == len(test)
    assert binomial_ok(len(test), 8100, 0.2)
    assert set(task.prompts(500, "test")) <= set(test)
    corpus = task.sft_corpus(500)
    assert {p for p, _ in corpus} <= set(train)
    prompts, completions = [p for p, _ in corpus], [c for _, c in corpus]
    assert accuracy_reward(completions, prompts).all() and exact_match(completions, prompts).all()
    np.testing.assert_allclose(task.reward(completions, prompts), 1.1)
    assert task.metrics(completions, prompts) == {"accuracy": 1.0, "exact_match": 1.0, "format": 1.0,
                                                  "reward": pytest.approx(1.1)}
    # the split is a property of the problem, not of the seed or the settings
    assert ArithmeticTask(seed=5).all_prompts("test") == test
    both = ArithmeticTask(seed=1, ops="+-")
    assert set(test) <= set(both.all_prompts("test"))
    # carries in the units column: 45% of two-digit additions, as documented
    carry = np.mean([int(p[1]) + int(p[4]) >= 10 for p in train + test])
    assert carry == pytest.approx(0.45)


@pytest.mark.parametrize("digits,ops", [(1, "+"), (2, "-"), (3, "+-*"), (2, "*")])
def test_arithmetic_variants_fit_alphabet_and_budget(digits, ops):
    task = ArithmeticTask(seed=1, digits=digits, ops=ops)
    low, high = (0, 9) if digits == 1 else (10 ** (digits - 1), 10**digits - 1)
    for split in ("train", "test"):
        for p, c in task.sft_corpus(300, split):
            assert in_alphabet(p + c) and len(p) <= MAX_PROMPT_CHARS and len(c) <= MAX_COMPLETION_CHARS
            a, b = (int(x) for x in p[:-1].replace("+", " ").replace("-", " ").replace("*", " ").split())
            assert low <= a <= high and low <= b <= high
            assert p[len(str(a))] in ops
            assert int(c[:-1]) == solve(p) and solve(p) >= 0
    if digits < 3:
        assert not set(task.all_prompts("train")) & set(task.all_prompts("test"))


def test_arithmetic_errors():
    with pytest.raises(ValueError, match="prompt"):
        solve("23 plus 48")
    with pytest.raises(TypeError, match="prompt"):
        solve(23)
    with pytest.raises(ValueError, match="prompts"):
        accuracy_reward(["71."], None)
    with pytest.raises(ValueError, match="prompts"):
        reward(["71.", "5."], ["23+48="])
    with pytest.raises(TypeError, match="completions"):
        format_reward("71.")
    with pytest.raises(ValueError, match="format_weight"):
        reward(["71."], ["23+48="], format_weight=-1)
    task = ArithmeticTask()
    with pytest.raises(ValueError, match="n"):
        task.prompts(0)
    with pytest.raises(ValueError, match="split"):
        task.sft_corpus(3, split="validation")
    with pytest.raises(ValueError, match="digits"):
        ArithmeticTask(digits=4)
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask(ops="/")
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask(ops="++")
    with pytest.raises(ValueError, match="test_fraction"):
        ArithmeticTask(test_fraction=0.0)


@pytest.mark.parametrize("make", [lambda: SentimentTask(seed=0), lambda: ArithmeticTask(seed=0)])
def test_tasks_share_one_interface(make):
    task = make()
    prompts = task.prompts(6)
    corpus = task.sft_corpus(6)
    r = task.reward([c for _, c in corpus], [p for p, _ in corpus])
    assert len(prompts) == 6 and r.shape == (6,) and np.all(np.isfinite(r))
    assert isinstance(task.metrics([c for _, c in corpus], [p for p, _ in corpus]), dict)
    assert set(task.prompts(20, "test")) <= set(task.all_prompts("test"))
    assert task.name in ("sentiment", "arithmetic") and repr(task).startswith(type(task).__name__)


def test_task_texts_round_trip_through_the_char_tokenizer(task):
    """The tasks write only what the book's character-level tokenizer knows: one token per character."""
    from rlhf_edu.lm.tokenizer import DEFAULT_ALPHABET, char_tokenizer

    assert ALPHABET == DEFAULT_ALPHABET
    tok = char_tokenizer()
    texts = [p + c for p, c in task.sft_corpus(50) + ArithmeticTask(digits=3, ops="+-*").sft_corpus(50)]
    texts += [r["prompt"] + r["rejected"] for r in task.preference_pairs(20)]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text) and tok.unk_token_id not in ids
        assert tok.decode(ids) == text
