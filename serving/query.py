"""``twotower query``: ask a running model server for one user's recommendations and print them.

Why it exists: the quickest check that a deployed model answers sensibly is to ask it as a user would (an id, a
history, a sentence) and read the ranked titles; ``--json`` gives the same answer to scripts. Failures (server
unreachable, unknown model, bad token) end in one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from serving.client import ClientError, Explanation, Ranking, RecommenderClient, read_titles
from serving.security import DEFAULT_TOKEN_ENV as TOKEN_ENV

EXIT_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="localhost:8500", help="gRPC address HOST:PORT (default localhost:8500)")
    parser.add_argument("--model", required=True, help="model name, e.g. shop")
    parser.add_argument("--version", type=int, help="a specific version (default: the newest served)")
    parser.add_argument("--signature", default="serving_default",
                        help="serving_default (history excluded) or recommend_including_history")
    parser.add_argument("--user-id", default="", help="the user's id (unknown ids are fine)")
    parser.add_argument("--history", default="", help="item ids the user interacted with, oldest first: I1,I2,...")
    parser.add_argument("--text", default="", help="free text about the user: a profile, their interests")
    parser.add_argument("--search", default="", help="a search box's query (\"lightweight tent\"): the model's "
                        "search_query input, where the words weigh far more than --text")
    parser.add_argument("-k", "--k", type=int, default=10, help="how many items to print (default 10)")
    parser.add_argument("--diversity", type=float, help="0..1: trade relevance for variety (maximal marginal "
                        "relevance; default: the model's, 0 = off)")
    parser.add_argument("--max-per-category", type=int, help="at most this many items of one category (0 = no cap)")
    parser.add_argument("--exclude", default="", help="item ids never to return (e.g. out of stock): I1,I2,...")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--token-file", help=f"file holding the bearer token the server expects (default: the "
                        f"{TOKEN_ENV} environment variable, if set)")
    parser.add_argument("--tls-ca", help="PEM file of the CA that signed the server's certificate (enables TLS)")
    parser.add_argument("--tls-cert", help="PEM client certificate, for servers that require one")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--base-path", help="the model's base path (e.g. models/shop), to show item titles")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as err:
        raise ClientError(None, f"cannot read the {what} {path}: {err.strerror or err}") from None


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Runs one query; returns the exit status."""
    try:
        if args.token_file:
            token = _read(args.token_file, "token file").decode("utf-8").strip()
        else:
            token = os.environ.get(TOKEN_ENV, "").strip() or None
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ClientError(None, "--tls-cert and --tls-key go together")
        tls = {"root_certificates": _read(args.tls_ca, "CA certificate") if args.tls_ca else None,
               "certificate_chain": _read(args.tls_cert, "client certificate") if args.tls_cert else None,
               "private_key": _read(args.tls_key, "client key") if args.tls_key else None}
        history = [item.strip() for item in args.history.split(",") if item.strip()]
        exclude = [item.strip() for item in args.exclude.split(",") if item.strip()]
        with RecommenderClient(args.server, token=token, timeout=args.timeout, **tls) as client:
            ranking = client.recommend(args.model, user_id=args.user_id, history=history, text=args.text,
                                       k=args.k, version=args.version, signature=args.signature,
                                       diversity=args.diversity, exclude=exclude,
                                       max_per_category=args.max_per_category, search=args.search)
    except ClientError as error:
        print(f"error: {error.message}", file=err)
        return EXIT_ERROR
    titles = read_titles(args.base_path, ranking.version) if args.base_path else {}
    if args.base_path and not titles:
        print(f"note: no assets/items.tsv under {args.base_path}; titles left out", file=err)
    out.write(render_json(ranking, titles) if args.json else render_table(ranking, titles))
    return 0


def why(explanation: Explanation | None, titles: dict[str, str]) -> str:
    """"because you viewed <title>" for a history item, "matches: <words>" for request words, "" for neither."""
    if explanation is None:
        return ""
    parts = []
    if explanation.item_id:
        parts.append(f"because you viewed {titles.get(explanation.item_id) or explanation.item_id}")
    if explanation.words:
        parts.append("matches: " + ", ".join(explanation.words))
    return "; ".join(parts)


def _explanations(ranking: Ranking) -> list[Explanation | None]:
    return ranking.explanations or [None] * len(ranking)


def render_json(ranking: Ranking, titles: dict[str, str]) -> str:
    rows = []
    for rank, ((item, score), explanation) in enumerate(zip(ranking, _explanations(ranking)), start=1):
        row = {"rank": rank, "item_id": item, "score": round(score, 6)}
        if titles:
            row["title"] = titles.get(item)
        if explanation is not None:
            row["because"] = ({"item_id": explanation.item_id, "score": round(explanation.score, 6),
                               **({"title": titles.get(explanation.item_id)} if titles else {})}
                              if explanation.item_id else None)
            row["because_words"] = list(explanation.words)
        rows.append(row)
    return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"


def render_table(ranking: Ranking, titles: dict[str, str]) -> str:
    version = f" version {ranking.version}" if ranking.version is not None else ""
    lines = [f"model {ranking.model}{version}: {len(ranking)} items"]
    if not ranking:
        return lines[0] + "\n"
    width = max(len("item"), *(len(item) for item, _ in ranking))
    lines.append(f"{'rank':>4}  {'item':<{width}}  {'score':>8}" + ("  title" if titles else ""))
    for rank, ((item, score), explanation) in enumerate(zip(ranking, _explanations(ranking)), start=1):
        title = f"  {titles.get(item, '?')}" if titles else ""
        lines.append(f"{rank:>4}  {item:<{width}}  {score:>8.4f}{title}")
        reason = why(explanation, titles)
        if reason:
            lines.append(f"{'':>4}  {'':<{width}}  {'':>8}  ↳ {reason}")
    return "\n".join(lines) + "\n"
