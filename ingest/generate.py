"""A deterministic synthetic e-commerce world: catalogue, users and a half year of their behaviour.

Why it exists
-------------
The project needs data that (a) needs no download, (b) is big or small on demand, (c) is byte-identical for the
same seed, and above all (d) has *known* latent structure that shows in the text, so that we can check that a
text tower really earns its keep: on items released after training ("cold" items) an ID-only model knows
nothing, while a model that reads titles and descriptions can place them next to the warm items they resemble.

Latent structure (what a good model can recover)
------------------------------------------------
* 12 product **categories** (outdoor, kitchen, skincare, ...). Each has its own English and parallel Chinese
  vocabulary of product nouns, materials and use cases, and 3-6 invented **brands**.
* Inside each category 3-4 latent **styles** (e.g. ultralight / family / expedition / budget), each with its own
  adjectives (English and Chinese), a "what it values" phrase and a price multiplier. Brands lean to styles.
* An **item** is (category, style, brand, product noun). Its title is brand + style adjectives (+ material) +
  noun (+ a model code), its description 2-3 sentences built from the same words plus generic filler; a share
  of items (``chinese_share``) is written in Chinese from the parallel vocabulary. Price is lognormal by
  category, style (premium styles cost more) and noun. Popularity is Zipf-like inside a category. Most items
  exist from the start, ~20% are released during the training period and ~10% after ``valid_start`` (the cold
  items).
* A **user** has a taste: a mixture over 1-3 categories (one dominant), a preferred style (and sometimes a
  second one) per category, a preferred price level and a price sensitivity. The taste *drifts*: one interest
  grows over the window, sometimes a brand-new category appears late. Profile text (written at sign-up, so
  from the early taste; ~20% empty; a share in Chinese) and recent search queries (from the late taste) are
  derived from it. Age band and region correlate weakly with the dominant category.
* **Behaviour**: each user has a heavy-tailed activity level and an active period (~8% of users are new and
  only appear after ``valid_start``). Events come in sessions. Each view picks a category from the current
  taste, then an item already released at that moment with probability
  ∝ popularity^a · exp(style match + price fit + language match + recency bonus for newly released items).
  Some views re-view an earlier item; a view turns into a purchase more often when the style matches and much
  more often on a re-view.

The vocabulary (categories, their English and Chinese words, styles, brands, personas; filler sentences) is
data, in ``generate_vocabulary.json`` beside this module; this module holds the story and the numbers.

Files written (all UTF-8 CSV, timestamps ISO 8601 UTC with a trailing Z; names from
:mod:`ingest.formats.generated`, the format that reads them back):
``items.csv`` (item_id, title, description, category, brand, price, release_time),
``users.csv`` (user_id, profile_text, search_queries, age_band, region),
``interactions.csv`` (user_id, item_id, timestamp, event, weight), ``world.json`` (dates, categories,
cold items, new users, counts) and ``search_queries.csv`` (user_id, query, category, noun, style,
relevant_item_ids: the ground truth of each search query, the space-separated ids of the items of the product
type it was generated from; ``training/search_queries.py`` evaluates text-only requests against it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from twotower.layout import write_atomic

from .formats.generated import FILES, SEARCH_QUERIES, WORLD

__all__ = ["generate_world", "hidden_world", "view_probabilities", "purchase_weights", "HiddenWorld", "CATEGORIES"]

START = np.datetime64("2024-01-01T00:00:00", "s")
DAY = 86_400
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_BASE = np.array([0.18, 0.30, 0.24, 0.16, 0.12])
REGIONS = ("north", "south", "east", "west", "central")

# Behaviour knobs (kept here so the docstring's story can be checked against numbers).
POP_ZIPF = 0.9          # popularity of the r-th item in a category ∝ (r+1)^-POP_ZIPF
POP_EXP = 0.8           # the "a" in popularity^a
STYLE_MAIN = 1.8        # logit bonus for the user's preferred style
STYLE_SECOND = 0.6      # ... and for a second liked style
LANG_BONUS = 0.5        # users lean a little towards items in their own language
RECENCY_BONUS = 2.0     # logit bonus for a just-released item, decaying with RECENCY_TAU
RECENCY_TAU = 14 * DAY
REPEAT_P = 0.12         # share of views that re-view an earlier item of the same user
REVIEW_STEP_P = 0.45    # a re-view goes back a geometric number of views with this success chance
NEW_USER_SHARE = 0.08
PURCHASE_DELAY_S = 60   # a purchase follows its view after this many seconds, plus an exponential wait ...
PURCHASE_DELAY_MEAN_S = 1500.0   # ... of this mean
EMPTY_PROFILE_SHARE = 0.20
COLD_ITEM_SHARE = 0.10
SPREAD_ITEM_SHARE = 0.20


# --------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Style:
    key: str
    en: tuple[str, ...]      # adjectives
    zh: tuple[str, ...]
    value_en: str            # what a buyer of this style values
    value_zh: str
    price: float             # price multiplier


@dataclasses.dataclass(frozen=True)
class Category:
    key: str
    name: str
    zh_name: str
    price: float                              # median price of the category
    nouns: tuple[tuple[str, str], ...]        # (english, chinese)
    materials: tuple[tuple[str, str], ...]
    uses: tuple[tuple[str, str], ...]
    styles: tuple[Style, ...]
    brands: tuple[tuple[str, tuple[int, ...]], ...]   # (name, styles it leans to)
    personas: tuple[tuple[str, ...], tuple[str, ...]]  # (english, chinese)
    interests: tuple[tuple[str, ...], tuple[str, ...]]
    ages: tuple[int, ...]                      # indices into AGE_BANDS this category leans to
    region: int                                # index into REGIONS it leans to


def _load_vocabulary(path: Path) -> tuple[tuple[Category, ...], dict]:
    """The categories and filler sentences of :data:`VOCABULARY_FILE` (its ``_about`` says what each field is)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    categories = tuple(
        Category(c["key"], c["name"], c["zh_name"], float(c["price"]),
                 tuple(c["nouns"].items()), tuple(c["materials"].items()), tuple(c["uses"].items()),
                 tuple(Style(s["key"], tuple(s["en"]), tuple(s["zh"]), s["value_en"], s["value_zh"], float(s["price"]))
                       for s in c["styles"]),
                 tuple((name, tuple(styles)) for name, styles in c["brands"].items()),
                 (tuple(c["personas"]["en"]), tuple(c["personas"]["zh"])),
                 (tuple(c["interests"]["en"]), tuple(c["interests"]["zh"])),
                 tuple(c["ages"]), int(c["region"]))
        for c in data["categories"])
    return categories, {key: (tuple(data[key]["en"]), tuple(data[key]["zh"]))
                        for key in ("description_filler", "profile_filler")}


VOCABULARY_FILE = Path(__file__).with_name("generate_vocabulary.json")
CATEGORIES, _FILLER = _load_vocabulary(VOCABULARY_FILE)
FILLER_EN, FILLER_ZH = _FILLER["description_filler"]
PROFILE_FILLER_EN, PROFILE_FILLER_ZH = _FILLER["profile_filler"]


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

class _Draws:
    """Cheap scalar picks from a pre-drawn row of uniforms (far faster than one rng call per pick)."""

    __slots__ = ("row", "i")

    def __init__(self, row: np.ndarray):
        self.row = row.tolist()
        self.i = 0

    def u(self) -> float:
        v = self.row[self.i % len(self.row)]
        self.i += 1
        return v

    def index(self, n: int) -> int:
        """A position in a sequence of length ``n`` (what :meth:`pick` draws, for a caller that needs it)."""
        return int(self.u() * n)

    def pick(self, seq):
        return seq[self.index(len(seq))]

    def sample(self, seq, k: int) -> list:
        pool = list(seq)
        out = []
        for _ in range(min(k, len(pool))):
            out.append(pool.pop(int(self.u() * len(pool))))
        return out


def _an(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _upper1(text: str) -> str:
    return text[:1].upper() + text[1:]


def _cap(words: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in words.split(" "))


def _iso(seconds: np.ndarray) -> np.ndarray:
    stamps = (START + np.asarray(seconds, dtype=np.int64).astype("timedelta64[s]")).astype(str)
    return np.char.add(stamps, "Z")


def _iso1(seconds: int) -> str:
    return str(START + np.timedelta64(int(seconds), "s")) + "Z"


def _sample_rows(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index sampled from softmax(logits) per row (-inf allowed), one uniform per row."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    idx = (cum < (u * cum[:, -1])[:, None]).sum(axis=1)
    return np.minimum(idx, logits.shape[1] - 1)


# --------------------------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------------------------

def _item_text(cat: Category, style: Style, brand: str, noun_i: int, zh: bool, d: _Draws) -> tuple[str, str]:
    noun_en, noun_zh = cat.nouns[noun_i]
    mat_en, mat_zh = d.pick(cat.materials)
    use_en, use_zh = d.pick(cat.uses)
    langs = 1 if zh else 0
    adjs = style.zh if zh else style.en
    n_adj = 1 if d.u() < 0.55 else 2
    title_adjs = d.sample(adjs, n_adj)
    adj2 = d.pick(adjs)
    with_material = d.u() < 0.35
    r = d.u()
    initials = "".join(c for c in brand if c.isupper())[:2] or brand[:2].upper()
    if r < 0.35:
        suffix = f"{initials}-{100 + int(d.u() * 900)}"
    elif r < 0.45:
        suffix = f"Gen {2 + int(d.u() * 3)}" if not zh else f"第{'二三四'[int(d.u() * 3)]}代"
    elif r < 0.55:
        n = 2 + int(d.u() * 4)
        suffix = f"({n}-Pack)" if not zh else f"{n}件装"
    elif r < 0.60:
        suffix = "2024 Edition" if not zh else "2024款"
    else:
        suffix = ""
    marketing = ""
    if d.u() < 0.12:
        marketing = d.pick(("New", "Upgraded", "Bestselling")) if not zh else d.pick(("新款", "升级款", "爆款"))

    if langs == 0:
        parts = [brand]
        if marketing:
            parts.append(marketing)
        parts += [_cap(a) for a in title_adjs]
        if with_material:
            parts.append(_cap(mat_en))
        parts.append(_cap(noun_en))
        if suffix:
            parts.append(suffix)
        title = " ".join(parts)
        a = title_adjs[0]
        plural = noun_en.endswith("s") and not noun_en.endswith("ss")
        this, is_, pairs, art = ("These", "are", "pair", "") if plural else ("This", "is", "pairs", _an(a) + " ")
        s1 = d.pick((
            f"{this} {a} {noun_en} {is_} made from {mat_en} and built for {use_en}.",
            f"Designed for {use_en}, the {brand} {noun_en} {pairs} {mat_en} with {_an(a)} {a} build.",
            _upper1(f"{art}{a} {noun_en} in {mat_en}, ideal for {use_en}."),
            f"Made of {mat_en}, {this.lower()} {noun_en} {is_} {_an(a)} {a} pick for {use_en}.",
        ))
        s2 = d.pick((
            f"Its {adj2} design suits anyone who values {style.value_en}.",
            f"A good choice if you care about {style.value_en}.",
            f"{brand} focuses on {style.value_en}, and it shows.",
            f"Part of the {adj2} range from {brand}.",
        ))
        sentences = [s1, s2]
        if d.u() < 0.7:
            sentences.append(d.pick(FILLER_EN))
        if d.u() < 0.3:
            sentences[1], sentences[-1] = sentences[-1], sentences[1]
        return title, " ".join(sentences)

    title = brand + " " + marketing + "".join(title_adjs) + (mat_zh if with_material else "") + noun_zh
    if suffix:
        title += " " + suffix
    a = title_adjs[0]
    s1 = d.pick((
        f"这款{a}{noun_zh}采用{mat_zh}，适合{use_zh}。",
        f"{brand}{a}{noun_zh}，{mat_zh}材质，专为{use_zh}设计。",
        f"{mat_zh}打造的{a}{noun_zh}，{use_zh}的好帮手。",
    ))
    s2 = d.pick((
        f"{adj2}设计，适合注重{style.value_zh}的你。",
        f"如果你看重{style.value_zh}，它是不错的选择。",
        f"{brand}一直专注于{style.value_zh}。",
    ))
    sentences = [s1, s2]
    if d.u() < 0.7:
        sentences.append(d.pick(FILLER_ZH))
    return title, "".join(sentences)


def _make_items(rng: np.random.Generator, n: int, horizon: int, valid_s: int, chinese_share: float) -> dict:
    n_cat = len(CATEGORIES)
    cat_w = rng.dirichlet(np.full(n_cat, 8.0))
    cat = rng.choice(n_cat, size=n, p=cat_w)
    cat[rng.permutation(n)[: min(n, n_cat)]] = np.arange(min(n, n_cat))   # every category present
    style = np.zeros(n, dtype=np.int64)
    brand = np.zeros(n, dtype=np.int64)
    noun = np.zeros(n, dtype=np.int64)
    logpop = np.zeros(n)
    price = np.zeros(n)
    for c, spec in enumerate(CATEGORIES):
        members = np.flatnonzero(cat == c)
        m = len(members)
        n_sty = len(spec.styles)
        style[members] = rng.choice(n_sty, size=m, p=rng.dirichlet(np.full(n_sty, 4.0)))
        lean = np.array([[3.0 if s in leans else 0.4 for (_, leans) in spec.brands] for s in range(n_sty)])
        lean /= lean.sum(axis=1, keepdims=True)
        cum = np.cumsum(lean[style[members]], axis=1)
        brand[members] = np.minimum((rng.random(m)[:, None] > cum).sum(axis=1), len(spec.brands) - 1)
        noun[members] = rng.integers(0, len(spec.nouns), size=m)
        noun_mult = rng.lognormal(0.0, 0.35, size=len(spec.nouns))
        style_mult = np.array([s.price for s in spec.styles])
        raw = spec.price * style_mult[style[members]] * noun_mult[noun[members]] * rng.lognormal(0.0, 0.3, size=m)
        price[members] = np.maximum(np.round(raw), 1.0) - 0.01
        logpop[members] = -POP_ZIPF * np.log1p(rng.permutation(m))

    zh = np.zeros(n, dtype=bool)
    zh[rng.choice(n, size=int(round(chinese_share * n)), replace=False)] = True

    # Release times: most at the start, some spread over the training period, ~10% after valid_start (cold).
    release = np.zeros(n, dtype=np.int64)
    order = rng.permutation(n)
    n_cold = int(round(COLD_ITEM_SHARE * n))
    n_spread = int(round(SPREAD_ITEM_SHARE * n))
    cold_idx, spread_idx = order[:n_cold], order[n_cold:n_cold + n_spread]
    last = max(valid_s + 1, horizon - 3 * DAY)
    release[cold_idx] = rng.integers(valid_s, last, size=len(cold_idx))
    release[spread_idx] = rng.integers(DAY, valid_s, size=len(spread_idx))
    for c in range(n_cat):   # every category needs something on sale at the very start
        members = np.flatnonzero(cat == c)
        if len(members) and not (release[members] == 0).any():
            release[members[np.argmax(logpop[members])]] = 0

    draws = rng.random((n, 24))
    titles, descs, brands = [], [], []
    for i in range(n):
        spec = CATEGORIES[cat[i]]
        b = spec.brands[brand[i]][0]
        t, dsc = _item_text(spec, spec.styles[style[i]], b, int(noun[i]), bool(zh[i]), _Draws(draws[i]))
        titles.append(t)
        descs.append(dsc)
        brands.append(b)
    return dict(cat=cat, style=style, brand=brand, noun=noun, logpop=logpop, price=price, zh=zh,
                release=release, title=titles, description=descs, brand_name=brands)


# --------------------------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------------------------

SLOTS = 4   # at most 3 sign-up interests + 1 that appears through drift


def _make_users(rng: np.random.Generator, n: int, cat_sizes: np.ndarray, horizon: int, valid_s: int,
                chinese_share: float) -> dict:
    n_cat = len(CATEGORIES)
    # Popular categories attract more users, but not proportionally.
    # Empty categories (only in tiny worlds) are never chosen.
    cat_p = np.sqrt(cat_sizes.astype(float))
    cat_p = cat_p / cat_p.sum()
    log_p = np.where(cat_p > 0, np.log(np.where(cat_p > 0, cat_p, 1.0)), -np.inf)
    keys = log_p[None, :] - np.log(-np.log(rng.random((n, n_cat))))  # Gumbel top-k = weighted, no replacement
    ranked = np.argsort(-keys, axis=1, kind="stable")[:, :SLOTS]
    n_avail = int((cat_sizes > 0).sum())
    k = np.minimum(rng.choice([1, 2, 3], size=n, p=[0.3, 0.45, 0.25]), n_avail)

    cats = np.full((n, SLOTS), -1, dtype=np.int64)
    w0 = np.zeros((n, SLOTS))
    w1 = np.zeros((n, SLOTS))
    main_style = np.full((n, SLOTS), -1, dtype=np.int64)
    second_style = np.full((n, SLOTS), -1, dtype=np.int64)
    pref_logp = np.zeros((n, SLOTS))
    alpha = np.array([4.0, 2.0, 1.0])
    gam = rng.gamma(np.broadcast_to(alpha, (n, 3)))
    drift_u = rng.random((n, 4))
    style_u = rng.random((n, SLOTS, 3))
    price_z = rng.normal(0.0, 0.3, size=(n, SLOTS))
    for u in range(n):
        ku = int(k[u])
        g = gam[u, :ku]
        w0[u, :ku] = g / g.sum()
        w1[u, :ku] = w0[u, :ku]
        used = ku
        if ku >= 2:                           # a secondary interest grows over the window
            r = 1 + int(drift_u[u, 0] * (ku - 1))
            w1[u, r] += 0.15 + 0.35 * drift_u[u, 1]
        if ku < n_avail and drift_u[u, 2] < (0.4 if ku == 1 else 0.15):   # a brand-new interest appears late
            w1[u, ku] = 0.2 + 0.25 * drift_u[u, 3]
            used = ku + 1
        w1[u] /= w1[u].sum()
        cats[u, :used] = ranked[u, :used]
        for j in range(used):
            spec = CATEGORIES[cats[u, j]]
            n_sty = len(spec.styles)
            ms = int(style_u[u, j, 0] * n_sty)
            main_style[u, j] = ms
            if style_u[u, j, 1] < 0.4:
                second_style[u, j] = (ms + 1 + int(style_u[u, j, 2] * (n_sty - 1))) % n_sty
            pref_logp[u, j] = math.log(spec.price * spec.styles[ms].price) + price_z[u, j]

    sens = rng.uniform(0.3, 1.6, size=n)
    zh = np.zeros(n, dtype=bool)
    zh[rng.choice(n, size=int(round(chinese_share * n)), replace=False)] = True
    new = np.zeros(n, dtype=bool)
    new[rng.choice(n, size=int(round(NEW_USER_SHARE * n)), replace=False)] = True
    empty = np.zeros(n, dtype=bool)
    empty[rng.choice(n, size=int(round(EMPTY_PROFILE_SHARE * n)), replace=False)] = True

    activity = np.clip(np.round(rng.lognormal(math.log(12.0), 0.75, size=n)), 5, 60).astype(np.int64)
    a_start = rng.integers(0, int(0.75 * horizon), size=n)
    stays = rng.random(n) < 0.6
    span = (horizon - a_start) * rng.uniform(0.15, 1.0, size=n)
    a_end = np.where(stays, horizon, a_start + np.maximum(span, 2 * DAY)).astype(np.int64)
    new_start = rng.integers(valid_s, max(valid_s + 1, horizon - 2 * DAY), size=n)
    a_start = np.where(new, new_start, a_start)
    a_end = np.where(new, horizon, np.minimum(a_end, horizon))

    # Age band and region: weak correlation with the dominant category.
    age = np.zeros(n, dtype=np.int64)
    region = np.zeros(n, dtype=np.int64)
    demo_u = rng.random((n, 2))
    for c, spec in enumerate(CATEGORIES):
        members = np.flatnonzero(cats[:, 0] == c)
        lean = np.zeros(len(AGE_BANDS))
        lean[list(spec.ages)] = 1.0 / len(spec.ages)
        p_age = np.cumsum(0.55 * AGE_BASE + 0.45 * lean)
        age[members] = np.minimum((demo_u[members, 0:1] > p_age[None, :]).sum(axis=1), len(AGE_BANDS) - 1)
        p_reg = np.full(len(REGIONS), 0.7 / len(REGIONS))
        p_reg[spec.region] += 0.3
        region[members] = np.minimum((demo_u[members, 1:2] > np.cumsum(p_reg)[None, :]).sum(axis=1),
                                     len(REGIONS) - 1)

    text_draws = rng.random((n, 64))
    profiles, queries, query_truth = [], [], []
    for u in range(n):
        d = _Draws(text_draws[u])
        profiles.append("" if empty[u] else _profile(u, cats, w0, main_style, sens, bool(zh[u]), d))
        sources = _queries(u, cats, w1, main_style, second_style, sens, bool(zh[u]), d)
        queries.append(QUERY_SEPARATOR.join(q.text for q in sources))
        query_truth.append(sources)
    return dict(cats=cats, w0=w0, w1=w1, main_style=main_style, second_style=second_style, pref_logp=pref_logp,
                sens=sens, zh=zh, new=new, activity=activity, a_start=a_start, a_end=a_end, age=age,
                region=region, profile=profiles, queries=queries, query_truth=query_truth)


def _profile(u, cats, w0, main_style, sens, zh: bool, d: _Draws) -> str:
    slots = [j for j in range(SLOTS) if cats[u, j] >= 0 and w0[u, j] >= 0.2]
    lang = 1 if zh else 0
    out = []
    for n_j, j in enumerate(slots):
        spec = CATEGORIES[cats[u, j]]
        style = spec.styles[main_style[u, j]]
        adj = d.pick(style.zh if zh else style.en)
        interest = d.pick(spec.interests[lang])
        if n_j == 0:
            persona = d.pick(spec.personas[lang])
            if zh:
                out.append(d.pick((f"{persona}，喜欢{adj}的{interest}。", f"{persona}，一直在找{adj}{interest}。",
                                   f"我是{persona}，平时主要买{adj}{interest}。")))
            else:
                out.append(d.pick((f"{persona} who loves {adj} {interest}.",
                                   f"{persona}. Always on the lookout for {adj} {interest}.",
                                   f"{persona}; mostly buys {adj} {interest}.",
                                   f"{persona} with a soft spot for {adj} {interest} and {style.value_en}.")))
        else:
            if zh:
                out.append(d.pick((f"最近也在看{adj}{interest}。", f"也喜欢{adj}风格的{interest}。")))
            else:
                out.append(d.pick((f"Also shopping for {adj} {interest}.", f"Into {adj} {interest} too.")))
    if sens[u] > 1.3:
        out.append("比较在意性价比。" if zh else d.pick(("Always hunting for a good deal.", "Budget-conscious.")))
    elif sens[u] < 0.5:
        out.append("愿意为品质多花钱。" if zh else "Happy to pay more for quality.")
    if d.u() < 0.3:
        out.append(d.pick(PROFILE_FILLER_ZH if zh else PROFILE_FILLER_EN))
    return ("" if zh else " ").join(out)


@dataclasses.dataclass(frozen=True)
class QuerySource:
    """One search query and what it was generated from: the category, product noun and style (indices into
    :data:`CATEGORIES`, its ``nouns`` and ``styles``)."""

    text: str
    category: int
    noun: int
    style: int


QUERY_SEPARATOR = " | "   # between a user's queries in users.csv's search_queries


def _queries(u, cats, w1, main_style, second_style, sens, zh: bool, d: _Draws) -> list[QuerySource]:
    n_q = 2 + int(d.u() * 4)
    slots = [j for j in range(SLOTS) if cats[u, j] >= 0]
    weights = np.cumsum([w1[u, j] for j in slots])
    out = []
    for _ in range(n_q):
        j = slots[min(int(np.searchsorted(weights, d.u() * weights[-1], side="right")), len(slots) - 1)]
        spec = CATEGORIES[cats[u, j]]
        s = main_style[u, j]
        if second_style[u, j] >= 0 and d.u() < 0.3:
            s = second_style[u, j]
        style = spec.styles[s]
        q_zh = zh and d.u() < 0.85
        noun_i = d.index(len(spec.nouns))
        noun_en, noun_zh = spec.nouns[noun_i]
        mat_en, mat_zh = d.pick(spec.materials)
        use_en, use_zh = d.pick(spec.uses)
        brand = d.pick([b for b, leans in spec.brands if s in leans] or [b for b, _ in spec.brands])
        if q_zh:
            adj = d.pick(style.zh)
            opts = [f"{adj}{noun_zh}", f"{brand}{noun_zh}", f"{noun_zh}推荐", f"{use_zh}{noun_zh}",
                    f"{mat_zh}{noun_zh}", f"{adj}{noun_zh}推荐"]
            if sens[u] > 1.2:
                opts.append(f"平价{noun_zh}")
        else:
            adj = d.pick(style.en)
            opts = [f"{adj} {noun_en}", f"{noun_en} {adj}", f"best {adj} {noun_en}", f"{brand} {noun_en}",
                    f"{noun_en} for {use_en}", f"{mat_en} {noun_en}"]
            if sens[u] > 1.2:
                opts.append(f"cheap {noun_en}")
        text = d.pick(opts).lower() if not q_zh else d.pick(opts)
        out.append(QuerySource(text, int(cats[u, j]), noun_i, int(s)))
    return out


# --------------------------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------------------------

def _category_pools(it: dict) -> list[dict]:
    """Per category: its items' indices, release times and what the view logits read of them."""
    return [dict(idx=idx, rel=it["release"][idx], logpop=POP_EXP * it["logpop"][idx], style=it["style"][idx],
                 logp=np.log(it["price"][idx]), zh=it["zh"][idx], new=(it["release"][idx] > 0).astype(float))
            for idx in (np.flatnonzero(it["cat"] == c) for c in range(len(CATEGORIES)))]


def _taste(us: dict, u: int, t: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """User ``u``'s interest slots and, per time in ``t``, the weight of each (the taste drifts from w0 to w1)."""
    slots = np.flatnonzero(us["cats"][u] >= 0)
    frac = (np.asarray(t) / horizon)[:, None]
    return slots, us["w0"][u, slots][None, :] * (1 - frac) + us["w1"][u, slots][None, :] * frac


VIEW_TERMS = ("popularity", "style", "price", "language", "recency")   # what a view's logits add up


def _view_logits(pool: dict, us: dict, u: int, j: int, t: np.ndarray, ignore: frozenset[str] = frozenset()
                 ) -> np.ndarray:
    """[len(t), items of the category] the logits of a fresh view by user ``u`` serving interest slot ``j`` at each
    time in ``t``: popularity, style match, price fit, language match, a just-released item's bonus (less the
    :data:`VIEW_TERMS` in ``ignore``); -inf for items not yet released."""
    static = pool["logpop"] if "popularity" not in ignore else np.zeros(len(pool["idx"]))
    if "style" not in ignore:
        aff = np.where(pool["style"] == us["main_style"][u, j], STYLE_MAIN, 0.0)
        if us["second_style"][u, j] >= 0:
            aff = aff + np.where(pool["style"] == us["second_style"][u, j], STYLE_SECOND, 0.0)
        static = static + aff
    if "price" not in ignore:
        static = static - us["sens"][u] * (pool["logp"] - us["pref_logp"][u, j]) ** 2
    if "language" not in ignore:
        static = static + np.where(pool["zh"] == bool(us["zh"][u]), LANG_BONUS, 0.0)
    age = np.asarray(t)[:, None] - pool["rel"][None, :]
    logits = np.broadcast_to(static[None, :], age.shape)
    if "recency" not in ignore:
        logits = logits + RECENCY_BONUS * pool["new"][None, :] * np.exp(-np.maximum(age, 0) / RECENCY_TAU)
    return np.where(age >= 0, logits, -np.inf)


def _purchase_chance(style_match: np.ndarray, re_view: np.ndarray) -> np.ndarray:
    """The chance that a view turns into a purchase: higher when the item has the user's main style for its
    category, much higher on a re-view."""
    return 0.09 + 0.12 * style_match + 0.25 * re_view


def _simulate(rng: np.random.Generator, it: dict, us: dict, horizon: int, progress: bool) -> dict:
    by_cat = _category_pools(it)
    item_cat, item_style = it["cat"], it["style"]
    out_u, out_i, out_t, out_e = [], [], [], []
    n_users = len(us["activity"])
    ms_by_cat = np.full(len(CATEGORIES), -1, dtype=np.int64)
    for u in tqdm(range(n_users), disable=not progress, desc="simulating users", unit="user"):
        n = int(us["activity"][u])
        a0, a1 = int(us["a_start"][u]), int(us["a_end"][u])
        # Sessions: the first one opens the user's active period, the rest fall uniformly inside it.
        n_s = 1 + int(rng.binomial(n - 1, 0.35))
        starts = np.empty(n_s, dtype=np.int64)
        starts[0] = a0
        starts[1:] = rng.integers(a0, max(a0 + 1, a1), size=n_s - 1)
        assign = rng.integers(0, n_s, size=n)
        assign[0] = 0
        offset = rng.exponential(900.0, size=n).astype(np.int64)
        offset[0] = 0
        t = np.sort(np.minimum(starts[assign] + offset, horizon - 1))

        # Which interest each view serves, from the drifting taste.
        slots, w = _taste(us, u, t, horizon)
        cum = np.cumsum(w, axis=1)
        slot = np.minimum((rng.random(n)[:, None] * cum[:, -1:] >= cum).sum(axis=1), len(slots) - 1)
        rep = rng.random(n) < REPEAT_P
        rep[0] = False
        pick_u = rng.random(n)
        back = rng.geometric(REVIEW_STEP_P, size=n)
        items = np.empty(n, dtype=np.int64)
        ms_by_cat[:] = -1
        for j_pos, j in enumerate(slots):
            c = int(us["cats"][u, j])
            ms_by_cat[c] = us["main_style"][u, j]
            ev = np.flatnonzero((slot == j_pos) & ~rep)
            if not len(ev):
                continue
            items[ev] = by_cat[c]["idx"][_sample_rows(_view_logits(by_cat[c], us, u, j, t[ev]), pick_u[ev])]
        for j in np.flatnonzero(rep):        # re-view an earlier item (its release is already in the past)
            items[j] = items[j - min(int(back[j]), j)]

        buy = rng.random(n) < _purchase_chance(ms_by_cat[item_cat[items]] == item_style[items], rep)
        bt = np.minimum(t[buy] + PURCHASE_DELAY_S + rng.exponential(PURCHASE_DELAY_MEAN_S, size=int(buy.sum()))
                        .astype(np.int64), horizon - 1)

        m = n + len(bt)
        out_u.append(np.full(m, u, dtype=np.int64))
        out_i.append(np.concatenate([items, items[buy]]))
        out_t.append(np.concatenate([t, bt]))
        out_e.append(np.concatenate([np.zeros(n, dtype=np.int8), np.ones(len(bt), dtype=np.int8)]))
    user = np.concatenate(out_u)
    item = np.concatenate(out_i)
    ts = np.concatenate(out_t)
    ev = np.concatenate(out_e)
    order = np.lexsort((ev, ts, user))
    return dict(user=user[order], item=item[order], t=ts[order], event=ev[order])


def _search_queries(it: dict, us: dict, user_ids: np.ndarray, item_ids: np.ndarray) -> pd.DataFrame:
    """The search-query ground truth: one row per query of every user, with the items of the product type
    (category and noun) it was generated from. The style is recorded but does not narrow the set: about half the
    queries name no style ("tent for hiking", "cheap tent", a brand), and a type holds ~10 items in the demo world, a
    type-and-style only 2-4, too few to read precision@10 from."""
    by_type: dict[tuple[int, int], str] = {}
    for key in set(zip(it["cat"].tolist(), it["noun"].tolist())):
        members = np.flatnonzero((it["cat"] == key[0]) & (it["noun"] == key[1]))
        by_type[key] = " ".join(item_ids[members])
    rows = [(user_ids[u], q.text, CATEGORIES[q.category].name, CATEGORIES[q.category].nouns[q.noun][0],
             CATEGORIES[q.category].styles[q.style].key, by_type.get((q.category, q.noun), ""))
            for u, sources in enumerate(us["query_truth"]) for q in sources]
    return pd.DataFrame(rows, columns=["user_id", "query", "category", "noun", "style", "relevant_item_ids"])


# --------------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HiddenWorld:
    """What the generator draws before it simulates behaviour and never writes: each item's category, style,
    price and language, each user's drifting taste (interest slots, styles, price level and sensitivity,
    language), and the time cut-offs in seconds from START. bench/world_ceiling.py ranks with it."""

    items: dict
    users: dict
    horizon: int
    valid_s: int
    test_s: int

    @functools.cached_property
    def pools(self) -> list[dict]:
        """:func:`_category_pools` of the items, made once for every :func:`view_probabilities` call."""
        return _category_pools(self.items)


def _draw(rng: np.random.Generator, users: int, items: int, days: int, chinese_share: float) -> HiddenWorld:
    horizon = int(days) * DAY
    valid_s = int(round(0.8 * days)) * DAY
    it = _make_items(rng, items, horizon, valid_s, chinese_share)
    us = _make_users(rng, users, np.bincount(it["cat"], minlength=len(CATEGORIES)), horizon, valid_s,
                     chinese_share)
    return HiddenWorld(it, us, horizon, valid_s, int(round(0.9 * days)) * DAY)


def hidden_world(world: dict) -> HiddenWorld:
    """The hidden state of the world a ``world.json`` describes, drawn again from its seed and sizes (the same
    draws :func:`generate_world` made, so it matches that world's files)."""
    return _draw(np.random.default_rng(int(world["seed"])), int(world["users"]), int(world["items"]),
                 int(world["days"]), float(world["chinese_share"]))


def view_probabilities(hidden: HiddenWorld, user: int, seconds: float, ignore: frozenset[str] = frozenset()
                       ) -> np.ndarray:
    """[items] the probability that a fresh view (not a re-view) by user number ``user``, ``seconds`` after START,
    picks each item: the interest slot from the user's taste at that time, then the item from the slot's
    category by :func:`_view_logits`. Exactly what the simulation samples from, unless ``ignore`` names some of
    :data:`VIEW_TERMS` (left out of the logits) or ``drift`` (the taste of sign-up instead of that time's)."""
    t = np.array([seconds], dtype=np.float64)
    slots, weights = _taste(hidden.users, user, t * ("drift" not in ignore), hidden.horizon)
    out = np.zeros(len(hidden.items["cat"]))
    for weight, j in zip(weights[0] / weights[0].sum(), slots):
        pool = hidden.pools[int(hidden.users["cats"][user, j])]
        logits = _view_logits(pool, hidden.users, user, j, t, ignore)[0]
        if np.isfinite(logits).any():
            p = np.exp(logits - logits.max())
            out[pool["idx"]] += weight * p / p.sum()
    return out


def purchase_weights(hidden: HiddenWorld, user: int, items: np.ndarray, seconds: np.ndarray,
                     at: float) -> np.ndarray:
    """[items] how likely each item is the one user number ``user`` buys at ``at``, given that they buy one then
    and viewed ``items`` at ``seconds`` (in time order) before: per view, the chance it turns into a purchase times
    the density of that purchase's delay; unnormalised. A view counts as a re-view when its item was viewed
    before (the simulation's own flag is not kept)."""
    out = np.zeros(len(hidden.items["cat"]))
    if not len(items):
        return out
    slots = hidden.users["cats"][user] >= 0
    main = dict(zip(hidden.users["cats"][user][slots].tolist(), hidden.users["main_style"][user][slots].tolist()))
    match = np.array([main.get(int(hidden.items["cat"][i]), -1) == hidden.items["style"][i] for i in items])
    re_view = np.zeros(len(items), bool)
    re_view[1:] = [items[k] in items[:k] for k in range(1, len(items))]
    wait = at - PURCHASE_DELAY_S - np.asarray(seconds, np.float64)
    density = np.where(wait >= 0, np.exp(-np.maximum(wait, 0) / PURCHASE_DELAY_MEAN_S), 0.0)
    np.add.at(out, items, _purchase_chance(match, re_view) * density)
    return out


def generate_world(out_dir: str | os.PathLike, users: int = 2000, items: int = 1500, seed: int = 0,
                   days: int = 180, chinese_share: float = 0.15, progress: bool = True) -> dict:
    """Generate the world into ``out_dir`` (created) and return the contents of its ``world.json``.

    Same arguments → byte-identical files. Files are written under a temporary name and renamed into place.
    """
    if users < 1 or items < 1:
        raise ValueError(f"users and items must be positive, got users={users}, items={items}")
    if days < 10:
        raise ValueError(f"days must be at least 10, got {days}")
    if not 0.0 <= chinese_share <= 1.0:
        raise ValueError(f"chinese_share must be within [0, 1], got {chinese_share}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hidden = _draw(rng, users, items, days, chinese_share)
    it, us, horizon, valid_s, test_s = hidden.items, hidden.users, hidden.horizon, hidden.valid_s, hidden.test_s
    sim = _simulate(rng, it, us, horizon, progress)

    iw = max(5, len(str(items - 1)))
    uw = max(5, len(str(users - 1)))
    item_ids = np.array([f"I{i:0{iw}d}" for i in range(items)], dtype=object)
    user_ids = np.array([f"U{i:0{uw}d}" for i in range(users)], dtype=object)

    items_df = pd.DataFrame({
        "item_id": item_ids,
        "title": it["title"],
        "description": it["description"],
        "category": [CATEGORIES[c].name for c in it["cat"]],
        "brand": it["brand_name"],
        "price": [f"{p:.2f}" for p in it["price"]],
        "release_time": _iso(it["release"]),
    })
    users_df = pd.DataFrame({
        "user_id": user_ids,
        "profile_text": us["profile"],
        "search_queries": us["queries"],
        "age_band": [AGE_BANDS[a] for a in us["age"]],
        "region": [REGIONS[r] for r in us["region"]],
    })
    inter_df = pd.DataFrame({
        "user_id": user_ids[sim["user"]],
        "item_id": item_ids[sim["item"]],
        "timestamp": _iso(sim["t"]),
        "event": np.where(sim["event"] == 1, "purchase", "view"),
        "weight": np.where(sim["event"] == 1, "3.0", "1.0"),
    })

    first = np.full(users, np.iinfo(np.int64).max)
    np.minimum.at(first, sim["user"], sim["t"])
    cold = np.flatnonzero(it["release"] >= valid_s)
    touched = np.zeros(items, dtype=bool)
    touched[sim["item"]] = True
    n_purchase = int(sim["event"].sum())
    world = {
        "seed": int(seed),
        "users": int(users),
        "items": int(items),
        "days": int(days),
        "chinese_share": float(chinese_share),
        "start": _iso1(0),
        "valid_start": _iso1(valid_s),
        "test_start": _iso1(test_s),
        "end": _iso1(horizon),
        "categories": [c.name for c in CATEGORIES],
        "cold_items": [str(x) for x in item_ids[cold]],
        "new_users": [str(x) for x in user_ids[np.flatnonzero(first >= valid_s)]],
        "counts": {
            "items": int(items),
            "users": int(users),
            "interactions": int(len(sim["t"])),
            "views": int(len(sim["t"]) - n_purchase),
            "purchases": n_purchase,
            "cold_items": int(len(cold)),
            "cold_items_with_interactions": int(touched[cold].sum()),
            "new_users": int((first >= valid_s).sum()),
            "chinese_items": int(it["zh"].sum()),
            "chinese_users": int(us["zh"].sum()),
            "empty_profiles": int(sum(1 for p in us["profile"] if not p)),
        },
    }

    def csv_text(df) -> str:
        return df.to_csv(index=False, lineterminator="\n")

    write_atomic(out / FILES["items"], csv_text(items_df))
    write_atomic(out / FILES["users"], csv_text(users_df))
    write_atomic(out / FILES["interactions"], csv_text(inter_df))
    write_atomic(out / SEARCH_QUERIES, csv_text(_search_queries(it, us, user_ids, item_ids)))
    write_atomic(out / WORLD, json.dumps(world, ensure_ascii=False, indent=2) + "\n")
    return world
