"""bench/quality.py --quick: the quality benchmark runs end to end on a slice of Amazon Scientific and writes its
page, so the benchmark cannot rot between full runs."""

import json
from pathlib import Path


def test_quick_quality_bench_ranks_every_model_on_the_same_cases(quick_quality_bench):
    out = quick_quality_bench / "quality.md"
    stderr = (quick_quality_bench / "stderr.txt").read_text(encoding="utf-8")
    page = out.read_text()
    results = json.loads(out.with_suffix(".json").read_text())["amazon-scientific"]
    models = {r["model"]: r for r in results}
    # ours, and the peers that need no extra library, always run; the others run where bench/install_peers.sh ran;
    # the text-similarity peer is named after the run's encoder (--quick trains with the tiny one)
    assert {"twotower (ours)", "popularity", "EASE", "TFRS two tower (ids only)", "tiny BERT text similarity"} <= \
        set(models)
    for name in ("ALS (implicit)", "LightFM WARP"):
        assert name in models or f"{name} skipped" in stderr
    users = {r["test"]["users"] for r in results}
    assert len(users) == 1 and users.pop() > 0          # every model ranked the same test cases
    rows = []
    for r in results:   # the page's table shows each model's numbers as the JSON holds them
        name = f"**{r['model']}**" if r["model"] == "twotower (ours)" else r["model"]
        numbers = " | ".join(f"{r['test'][f'{metric}@{k}']:.4f}" for k in (10, 50) for metric in ("recall", "ndcg"))
        assert f"| {name} | {numbers} |" in page, (name, numbers)
        rows.append((page.index(f"| {name} | {numbers} |"), r["test"]["recall@10"]))
    ranked = [recall for _, recall in sorted(rows)]
    assert ranked == sorted(ranked, reverse=True)      # best recall@10 first
    assert "cold_items" in models["twotower (ours)"]["test"]    # the slice leaves test targets unseen in training
    # the reported model was exported and its served top-10 checked against this evaluation
    served = models["twotower (ours)"]["served"]
    assert served["users"] == 50 and (Path(served["version"]) / "saved_model.pb").exists()
    assert f"in order, for all {served['users']} sampled test users" in page
    # both protocols: the history-kept table holds every model's second ranking, the published figures beside it
    kept = page[page.index("Ranked without excluding history items"):]
    for r in results:
        numbers = " | ".join(f"{r['test_with_history'][f'{metric}@{k}']:.4f}" for k in (10, 50)
                             for metric in ("recall", "ndcg"))
        assert f"| {r['model']} | {numbers} |" in kept, (r["model"], numbers)
    assert "| MISSRec (Wang et al. 2023) (published) | 0.1360 | 0.0753 | – | – |" in kept
    ours = models["twotower (ours)"]["test_with_history"]
    assert f"recall@10 {ours['recall@10']:.4f} = {ours['recall@10'] / 0.1360:.2f}x the best published" in kept
    assert out.with_suffix(".png").stat().st_size > 1000
