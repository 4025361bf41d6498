"""One text-only request to a trained run, as ``twotower evaluate`` asks its search queries: its top 10 from the
towers and from the run's raw text similarity, with the items of a product type marked.

Usage: python bench/text_request.py --run-dir RUN [--text "lightweight camping tent for two"] [--noun tent]

The run's data must be a generated world: the items of the type (``--noun``) come from its ``search_queries.csv``
(the generator's ground truth; a noun nobody searched for is not there). Prints how many of them are in the top 5
and the top 10 of each ranking. The served model answers the same (the export's parity checks); bench/cold_start.py
asks the tent query of a served version.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--text", default="lightweight camping tent for two")
    parser.add_argument("--noun", default="tent", help="the product type to count (a noun of the generator)")
    args = parser.parse_args()

    import numpy as np

    from ingest.formats.generated import read_search_queries
    from training import search_queries as sq
    from training.run import RunDir
    from training.trainer import evaluated_model

    config, prepared, model = evaluated_model(RunDir(args.run_dir))
    truth = read_search_queries(Path(config["data"]["path"]))
    if truth is None or not (truth["noun"] == args.noun).any():
        print(f"{config['data']['path']}: no search_queries.csv naming the noun {args.noun!r}", file=sys.stderr)
        return 2
    of_type = set(truth.loc[truth["noun"] == args.noun, "relevant"].iloc[0])
    catalog = prepared.artifacts.catalog
    ids = catalog["item_id"].tolist()
    scorers = sq.scorers(model, prepared, config, [args.text])
    scorers.pop("popularity")
    print(f"{args.text!r}: {len(of_type)} items of type {args.noun!r} in {len(ids)}")
    for name, scorer in scorers.items():
        top = sq.top_rows(scorer(np.arange(1)), 10, np.random.default_rng(0))[0]
        hits = [ids[r] in of_type for r in top]
        print(f"{name}: {sum(hits[:5])} in the top 5, {sum(hits)} in the top 10")
        for row, hit in zip(top, hits):
            print(f"  {'*' if hit else ' '} {ids[row]}  {catalog['title'][row]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
