"""``report.html``: a self-contained page of figures and tables from a campaign's results.

Usage::

    from entroguard.report.html import write_report
    path = write_report("demo-out")   # reads demo-out/results.sqlite, writes demo-out/report.html

Sections: what was run and how to read the three sizes; the clean baseline; corruptions (the
paper's Fig. 3); attacks (Fig. 4); a summary of the worst cases; per-image distributions; when
a campaign measured defences, rate and accuracy with and without each of them; and, when it
measured rate-adversarially trained models, every way of winning the bytes back side by side.
A section whose threats were not measured is replaced by a one-line note. "Where the bits go"
shows ``entroguard analyze``'s output when ``OUT/analysis/analysis.json`` exists.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from html import escape
from pathlib import Path

from entroguard import __version__
from entroguard.campaign.store import ResultStore
from entroguard.errors import EntroguardError
from entroguard.report import figures as F
from entroguard.report import intervals as I
from entroguard.report import summary as S
from entroguard.report.analysis_section import Analysis, analysis_section, load_analysis
from entroguard.report.data import (
    ATTACK_TITLES,
    PRIOR_TITLES,
    Results,
    corruption_name,
    family_label,
)
from entroguard.report.leak_section import leak_section
from entroguard.report.page import (
    Cell,
    figure,
    note,
    num_cell,
    page,
    rate_cell,
    signed,
    table,
    top1_cell,
    with_interval,
)
from entroguard.report.plan_section import load_plan, plan_section
from entroguard.report.winning_section import winning_section

REPORT_NAME = "report.html"


class ResultsNotFoundError(EntroguardError, FileNotFoundError):
    """No campaign results where a report was asked for."""


def write_report(out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` from ``out_dir/results.sqlite``; return its path.

    The page embeds every figure as a PNG ``data:`` URI and loads nothing from elsewhere, so it
    can be mailed or opened offline. It is written to a temporary file and renamed, so a reader
    never sees half a report.

    Raises:
        ResultsNotFoundError: ``out_dir`` holds no ``results.sqlite`` (run
            ``entroguard campaign`` first).
        EntroguardError: the database holds no measured condition.
    """
    out_dir = Path(out_dir)
    db = out_dir / "results.sqlite"
    if not db.is_file():
        raise ResultsNotFoundError(
            f"{db} not found: run `entroguard campaign CONFIG --out {out_dir}` "
            "(or `entroguard demo`) first"
        )
    with ResultStore(db) as store:
        results = Results.from_store(store)
        if not results.rows:
            raise EntroguardError(
                f"{db} holds no measured condition: run `entroguard campaign` to fill it"
            )
        finished = [r["finished_at"] for r in store.conditions()]
        html = build_html(
            results,
            title=f"entroguard report: {out_dir.resolve().name}",
            finished=(min(finished), max(finished)),
            analysis=load_analysis(out_dir),
            plan=load_plan(out_dir),
            leak=store.leak_rows(),
        )
    path = out_dir / REPORT_NAME
    tmp = path.with_name(f".{REPORT_NAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def build_html(
    results: Results,
    title: str = "entroguard report",
    finished: tuple[float, float] | None = None,
    analysis: Analysis | None = None,
    plan: dict | None = None,
    leak: list[dict] | None = None,
) -> str:
    """The report's HTML for ``results`` (``finished``: first and last measurement, epoch s;
    ``analysis``: ``entroguard analyze``'s output for the "Where the bits go" section;
    ``plan``: ``entroguard plan``'s record for "Where splitting pays off"; ``leak``: the
    campaign's leak rows for "What the bitstream leaks")."""
    builders: list[tuple[str, str, Callable[[Results], str]]] = [
        ("run", "What was run", _run_section),
        ("clean", "Clean baseline", _clean_section),
        ("corruptions", "Corruptions", _corruption_section),
        ("attacks", "Attacks", _attack_section),
        ("summary", "Summary", _summary_section),
        ("distributions", "Per-image distributions", _distribution_section),
        ("defences", "Defences", _defense_section),
        ("winning", "Winning the bytes back", winning_section),
    ]
    sections = [(anchor, name, build(results)) for anchor, name, build in builders]
    sections.append(("bits", "Where the bits go", analysis_section(analysis)))
    sections.append(("plan", "Where splitting pays off", plan_section(plan)))
    sections.append(("leak", "What the bitstream leaks", leak_section(leak or [])))
    sub = _subtitle(results, finished)
    header = f"<h1>{escape(title)}</h1><p class=sub>{sub}</p>{_findings(results)}"
    footer = (
        f"Written by entroguard {escape(__version__)} on {_date(time.time())}. "
        "Self-contained: every figure is embedded; nothing is loaded from the network."
    )
    return page(title, header, sections, footer)


# -- header ------------------------------------------------------------------------------------


def _date(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _subtitle(results: Results, finished: tuple[float, float] | None) -> str:
    parts = [
        f"{len(results.models)} model{'s' * (len(results.models) != 1)}",
        f"{len(results.rows)} conditions",
    ]
    seconds = sum(r.get("seconds") or 0.0 for r in results.rows)
    if finished:
        parts.append(f"measured {_date(finished[0])} \u2013 {_date(finished[1])}")
    if seconds:
        parts.append(f"{seconds / 60:.1f} min of measurement")
    return " \u00b7 ".join(parts)


def _findings(results: Results) -> str:
    """Three to five sentences with the headline numbers."""
    items = []
    worst = S.worst_per_family(results)
    attacks = [w for w in worst if w.family in results.attacks()]
    if attacks:
        w = max(attacks, key=lambda w: w.rate_max)
        items.append(
            f"Largest rate inflation by an attack: <b>{signed(w.rate_max, 1, '%')}</b> "
            f"({escape(_attack(w.threat))}, \u03b5={w.strength:g}/255, "
            f"{escape(w.rate_max_model)}); "
            f"mean over models {signed(w.rate_mean, 1, '%')} with a top-1 change of "
            f"{signed(w.top1_mean, 1, 'pp')}."
        )
    effects = S.corruption_effects(results)
    if effects:
        up, down = effects[0], effects[-1]
        for verb, e, ok in (("raising", up, up.rate > 0), ("lowering", down, down.rate < 0)):
            if ok:
                items.append(
                    f"Corruption {verb} the rate most: <b>{escape(e.name)}</b>, "
                    f"{signed(e.rate, 1, '%')} at severity {e.severity:g} (mean over models), "
                    f"top-1 {signed(e.top1, 1, 'pp')}."
                )
        n_up = sum(e.rate > 1 for e in effects)
        n_down = sum(e.rate < -1 for e in effects)
        items.append(
            f"At their strongest severity, {n_up} of {len(effects)} corruptions raise the mean "
            f"rate by more than 1 % and {n_down} lower it by more than 1 %."
        )
    clean_cost = _clean_cost_finding(results)
    if clean_cost:
        items.append(clean_cost)
    if not items:
        return ""
    return "<ul class=findings>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _clean_cost_finding(results: Results) -> str:
    """What each defence costs on clean images, when nobody attacks (mean over models)."""
    clean = next((r for r in S.defense_rows(results) if r["threat"] == "clean"), None)
    if clean is None:
        return ""
    costs = [f"<code>{escape(d)}</code> {signed(clean['rate'][d], 1, '%')} payload, "
             f"{signed(clean['top1'].get(d), 1, 'pp')} top-1"
             for d in clean["rate"] if d != "none" and clean["rate"][d] is not None]  # fmt: skip
    if not costs:
        return ""
    return "What each defence costs when nobody attacks (clean images): " + "; ".join(costs) + "."


def _attack(name: str) -> str:
    return ATTACK_TITLES.get(name, name)


def _run_section(results: Results) -> str:
    groups = []
    for g in results.groups:
        betas = [m["beta"] for m in results.models_of(g)]
        beta_text = ", ".join(f"{b:g}" for b in betas if b is not None) or "n/a"
        groups.append(
            f"<code>{escape(g.arch)}</code> {escape(PRIOR_TITLES.get(g.prior, g.prior))} "
            f"(\u03b2 = {beta_text})"
        )
    threats = []
    if results.select("clean", defense=None):
        threats.append(f"clean: {_n_text(results, ['clean'])} images")
    if results.corruptions(None):
        names = [f"corruption/{c}" for c in results.corruptions(None)]
        sev = sorted({s for t in names for s in results.strengths(t, None)})
        threats.append(
            f"{len(names)} corruptions \u00d7 severities {', '.join(f'{s:g}' for s in sev)}: "
            f"{_n_text(results, names)} images each"
        )
    for a in results.attacks(None):
        eps = ", ".join(f"{s:g}" for s in results.strengths(a, None))
        params = {r["params"] for r in results.select(a, defense=None)}
        ptext = "; ".join(_params(p) for p in sorted(params) if _params(p))
        threats.append(
            f"{escape(_attack(a))} (<code>{escape(a)}</code>), \u03b5 \u00d7 255 = {eps}"
            f"{f' [{escape(ptext)}]' if ptext else ''}: {_n_text(results, [a])} images"
        )
    defenses = ", ".join(f"<code>{escape(d)}</code>" for d in results.defenses)
    left = (
        "<dl>"
        f"<dt>Models ({len(results.models)})</dt><dd>{'<br>'.join(groups)}</dd>"
        f"<dt>Threats</dt><dd>{'<br>'.join(threats)}</dd>"
        f"<dt>Defences</dt><dd>{defenses}</dd>"
        "</dl>"
    )
    right = (
        "<dl>"
        "<dt>Estimated bytes</dt><dd>The entropy model's own estimate: the sum of "
        "\u2212log<sub>2</sub> p over the quantised latent (and hyper-latent), divided by 8. "
        "What the rate term of training minimises; no bitstream involved.</dd>"
        "<dt>Payload bytes</dt><dd>The real rANS coder output (one stream per image: the "
        "latent for FP; the hyper-latent, then the latent, for MSHP). "
        "<b>Every rate change in this report is a change of payload bytes</b>, relative to "
        "the same model's clean images without defence, on the same images.</dd>"
        "<dt>Packet bytes</dt><dd>What crosses the network: the payload plus entroguard's "
        "packet header (magic, version, model fingerprint, shapes, lengths, checksum).</dd>"
        "<dt>Top-1 change</dt><dd>In percentage points (pp) against the same clean reference; "
        "accuracy is measured on the tail's output for the decoded packets.</dd>"
        "</dl>"
    )
    return f"<div class=cols><div>{left}</div><div>{right}</div></div>"


def _n_text(results: Results, threats: list[str]) -> str:
    ns = sorted({n for t in threats for n in results.n_images(t)})
    return " / ".join(str(n) for n in ns) or "0"


def _params(text: str | None) -> str:
    try:
        params = json.loads(text or "{}")
    except ValueError:
        return text or ""
    return ", ".join(f"{k}={v}" for k, v in params.items())


# -- clean -------------------------------------------------------------------------------------


def _clean_section(results: Results) -> str:
    # arch and prior get their own columns only when the model names do not spell them out
    named = all(m["arch"] in m["name"] and m["prior"] in m["name"] for m in results.models)
    rows = []
    for m in results.models:
        c = results.clean(m["name"])
        if c is None:
            continue
        ratio = c["payload_bytes"] / c["est_bytes"] if c["est_bytes"] else None
        rows.append(
            [
                Cell(m["name"]),
                *([] if named else [Cell(m["arch"]), Cell(m["prior"])]),
                Cell("" if m["beta"] is None else f"{m['beta']:g}", num=True),
                num_cell(c["n"], 0),
                with_interval(num_cell(100 * c["top1"], 1), I.top1_interval(results, m["name"])),
                num_cell(c["est_bytes"]),
                with_interval(num_cell(c["payload_bytes"]), I.payload_interval(results, m["name"])),
                num_cell(c["packet_bytes"]),
                num_cell(ratio, 3),
                num_cell(c["packet_bytes"] - c["payload_bytes"]),
            ]
        )
    if not rows:
        return note(
            "No clean condition was measured, so no rate change can be computed; "
            "add <code>clean</code> to the campaign's threats."
        )
    headers = [
        "model",
        *([] if named else ["arch", "prior"]),
        ("\u03b2", True),
        ("n", True),
        ("top-1 (%)", True),
        ("est. bytes", True),
        ("payload bytes", True),
        ("packet bytes", True),
        ("payload / est.", True),
        ("header bytes", True),
    ]
    cap = (
        "Means per image on the clean test images, with 95 % confidence intervals in brackets "
        "(top-1: Wilson; payload: bootstrap over images). <i>payload / est.</i> above 1 is the "
        "coder's overhead over the ideal code length; <i>header bytes</i> = packet \u2212 payload."
    )
    fig = figure(
        F.render(F.rate_accuracy_figure, results),
        "clean top-1 against payload bytes",
        "<b>Rate\u2013accuracy trade-off on clean images.</b> One line per (architecture, "
        "entropy model) through its \u03b2 values: a larger \u03b2 should move left (fewer "
        "bytes) at some cost in accuracy. Error bars: 95 % confidence intervals (top-1: "
        "Wilson; payload: bootstrap over images).",
    )
    return table(headers, rows, cap) + fig


# -- corruptions -------------------------------------------------------------------------------


AGG_TEXT = (
    "Lines are the mean over the \u03b2 values of each (architecture, entropy model); the shaded "
    "band spans their minimum to maximum."
)


def _corruption_section(results: Results) -> str:
    if not results.corruptions():
        return note("No corruption was measured in this campaign; section omitted.")
    n = _n_text(results, [f"corruption/{c}" for c in results.corruptions()])
    heat = figure(
        F.render(F.corruption_heatmap_figure, results),
        "heat map of rate and accuracy change per corruption and severity",
        "<b>At a glance.</b> Mean over all models of the rate change (left, % of clean payload "
        "bytes; symmetric-log colour scale) and the top-1 change (right, pp), corruptions "
        "sorted by their mean rate change. Red is worse in both: more bytes, lower accuracy. "
        + _heatmap_reading(results),
    )
    rate = figure(
        F.render(F.corruption_grid_figure, results, "rate_change_pct"),
        "rate change against severity for each corruption",
        f"<b>Rate change (%) against severity</b>, one panel per corruption, a row per family "
        f"(y axis shared within a row). {AGG_TEXT} Compare the slopes: a corruption whose line "
        "climbs with severity makes every image cost more to send.",
    )
    top1 = figure(
        F.render(F.corruption_grid_figure, results, "top1_change_pp"),
        "top-1 change against severity for each corruption",
        f"<b>Top-1 change (pp) against severity</b>, same layout. {AGG_TEXT} Read it with the "
        "rate figure above: a rate rise with little accuracy loss is the case a server cannot "
        "tell from a legitimate image.",
    )
    intro = (
        f"<p>The {len(results.corruptions())} ImageNet-C corruptions applied to {n} test images "
        "(the paper's Fig.&nbsp;3). Corrupted images are identical for every model.</p>"
    )
    return intro + heat + rate + top1


# -- attacks -----------------------------------------------------------------------------------


def _attack_section(results: Results) -> str:
    attacks = results.attacks()
    if not attacks:
        return note("No attack was measured without a defence in this campaign; section omitted.")
    fig = figure(
        F.render(F.attack_figure, results, attacks),
        "rate and accuracy change against attack budget",
        "<b>White-box attacks against budget \u03b5</b> (L\u221e, in grey levels out of 255; "
        f"log scale). Top: rate change (%); bottom: top-1 change (pp). {AGG_TEXT} The entropy "
        "attack maximises the bits, the classifier attack the cross-entropy, random sign "
        "noise is the untargeted baseline of the same size: the gap between the first and the "
        "last is what the attacker gains from the gradient.",
    )
    n = ", ".join(f"{escape(a)}: {_n_text(results, [a])}" for a in attacks)
    return f"<p>The paper's Fig.&nbsp;4. Images per condition: {n}.</p>" + fig


# -- summary -----------------------------------------------------------------------------------


def _summary_section(results: Results) -> str:
    worst = S.worst_per_family(results)
    if not worst:
        return note("Only clean images were measured; nothing to summarise.")
    rows = [
        [
            Cell(family_label(w.family)),
            Cell(_condition_text(w.threat, w.strength)),
            rate_cell(w.rate_mean),
            top1_cell(w.top1_mean),
            rate_cell(w.rate_max),
            Cell(w.rate_max_model),
        ]
        for w in worst
    ]
    out = "<h3>Largest rate inflation per threat family</h3>" + table(
        [
            "family",
            "condition",
            ("rate (mean)", True),
            ("top-1 (mean)", True),
            ("rate (worst model)", True),
            "worst model",
        ],
        rows,
        "For each family the condition with the largest mean rate change over models, the "
        "accuracy it costs, and the single model it hurts most.",
    )
    effects = S.corruption_effects(results)
    if effects:
        k = min(3, len(effects) // 2 or 1)
        pick = effects[:k] + [e for e in effects[-k:] if e not in effects[:k]]
        rows = [
            [
                Cell(_direction(e.rate)),
                Cell(e.name),
                num_cell(e.severity, 0),
                rate_cell(e.rate),
                top1_cell(e.top1),
                rate_cell(e.rate_all),
            ]
            for e in pick
        ]
        out += "<h3>Corruptions that move the rate most</h3>" + table(
            [
                "",
                "corruption",
                ("severity", True),
                ("rate", True),
                ("top-1", True),
                ("rate, mean over severities", True),
            ],
            rows,
            "Means over models at the strongest measured severity.",
        )
    if "rate_pgd" in results.attacks():
        out += _rate_pgd_table(results)
    return out


def _heatmap_reading(results: Results) -> str:
    """What the heat map shows, from the data: the corruptions at its top and bottom."""
    effects = sorted(S.corruption_effects(results), key=lambda e: e.rate_all, reverse=True)
    if not effects:
        return ""

    def said(e: S.CorruptionEffect) -> str:
        return f"{e.name.replace('_', ' ')} ({e.rate_all:+.1f} %)"

    top, bottom = effects[: min(2, len(effects))], effects[min(2, len(effects)) :][-2:]
    text = f"Top rows here: {', '.join(said(e) for e in top)}"
    if bottom:
        text += f"; bottom rows: {', '.join(said(e) for e in bottom)}"
    return text + " (mean rate change over models and severities)."


def _direction(rate_change_pct: float) -> str:
    """What a rate change does, from its sign (not from its rank)."""
    if rate_change_pct > 0:
        return "raises"
    return "lowers" if rate_change_pct < 0 else "leaves"


def _rate_pgd_table(results: Results) -> str:
    measured = [s for s in results.strengths("rate_pgd") if s > 0]
    eps = [e for e in (8.0, 32.0) if e in measured] or measured[-1:]
    if not eps:
        return ""
    headers: list = ["model"]
    for e in eps:
        headers += [(f"rate, \u03b5={e:g}", True), (f"top-1, \u03b5={e:g}", True)]
    rows = []
    for m in results.models:
        cells = [Cell(m["name"])]
        for e in eps:
            r = results.select("rate_pgd", strength=e, model=m["name"])
            if not r:
                cells += [rate_cell(None), top1_cell(None)]
                continue
            args = (results, m["name"], "rate_pgd", e)
            cells += [
                with_interval(
                    rate_cell(r[0]["rate_change_pct"]), I.rate_change_interval(*args), signed
                ),
                with_interval(
                    top1_cell(r[0]["top1_change_pp"]), I.top1_change_interval(*args), signed
                ),
            ]
        rows.append(cells)
    return "<h3>Entropy attack per model</h3>" + table(
        headers,
        rows,
        "Rate PGD: payload change and top-1 change per model against the same clean images, "
        "with 95 % confidence intervals in brackets (paired bootstrap over images); the paper "
        "reports up to +95 % on ImageNet models.",
    )


def _condition_text(threat: str, strength: float) -> str:
    name = corruption_name(threat)
    if name is not None:
        return f"{name}, severity {strength:g}"
    if threat == "clean":
        return "clean"
    return f"{threat}, \u03b5={strength:g}/255"


# -- distributions -----------------------------------------------------------------------------


def _distribution_section(results: Results) -> str:
    models = S.distribution_models(results)
    conditions = S.distribution_conditions(results)
    if not models or len(conditions) < 2:
        return note("Needs clean images and at least one threat; section omitted.")
    img = F.render(F.distribution_figure, results, models, conditions)
    if img is None:
        return note("No per-image measurements found; section omitted.")
    labels = ", ".join(c.label.replace("\n", " ") for c in conditions)
    return figure(
        img,
        "per-image payload bytes under each condition",
        f"<b>Payload bytes per image</b> for one model per entropy model (the first "
        f"architecture's smallest \u03b2): {escape(labels)}. The noise and blur corruptions are "
        "the ones that raise and lower the mean rate most at their strongest severity. Dots "
        "are images, the bar spans the quartiles, the white dot is the median. A rate guard "
        "that thresholds single packets sees these distributions, not their means: look at "
        "how far each one moves past the clean upper tail.",
    )


# -- defences ----------------------------------------------------------------------------------


def _defense_section(results: Results) -> str:
    others = [d for d in results.defenses if d != "none"]
    if not others:
        return note(
            "No defence was measured in this campaign (only <code>none</code>); add "
            "<code>defenses:</code> to the campaign to compare them."
        )
    fig = figure(
        F.render(F.defense_figure, results, S.defense_family_rows(results)),
        "rate and accuracy change per threat family with and without each defence",
        "<b>Each defence against each threat family</b> at the strongest strength measured "
        "behind a defence (the same for every bar of a family), mean over threats and models; "
        "grey is no defence. Rate and top-1 changes are against "
        "the clean images <i>without</i> defence, so a defence that lowers the rate below clean "
        "shows a negative bar, and its cost on clean images is the first group.",
    )
    return fig + _defense_tables(results) + _adaptive_table(results)


def _defense_tables(results: Results) -> str:
    """Rate change, then top-1 change, per condition and defence: two tables, so each fits
    the page."""
    defenses, rows = results.defenses, S.defense_rows(results)
    headers = ["condition", ("models", True), *((d, True) for d in defenses)]
    common = (
        "without (<i>none</i>) and with each defence, over the models measured with a defence; "
        "corruptions at their strongest severity. Adaptive attacks exist only against a "
        "defence, so they have no <i>none</i> value."
    )
    out = []
    for metric, make, what in (("rate", rate_cell, "Mean payload change"),
                               ("top1", top1_cell, "Mean top-1 change")):  # fmt: skip
        body = [[Cell(_condition_text(r["threat"], r["strength"])), num_cell(r["n_models"], 0)]
                + [make(r[metric].get(d)) for d in defenses] for r in rows]  # fmt: skip
        out.append(table(headers, body, f"{what} against the clean images {common}"))
    return "<h3>Payload change per defence</h3>" + out[0] + "<h3>Top-1 change per defence</h3>" \
        + out[1]  # fmt: skip


def _adaptive_table(results: Results) -> str:
    """What each adaptive attack wins back against the defence it adapts to."""
    found = S.adaptive_rows(results)
    if not found:
        return note(
            "No adaptive attack was measured; add <code>rate_lowfreq</code>, "
            "<code>rate_region</code> or <code>rate_pgd_through</code> to the campaign."
        )
    labels = ["plain", "plain, defended", "adaptive"]

    def won_back(r: dict) -> float | None:
        a, p = r["rate"].get("adaptive"), r["rate"].get("plain, defended")
        return None if a is None or p is None else a - p

    rows = [
        [Cell(_condition_text(r["attack"], r["strength"])), Cell(escape(r["defense"])),
         num_cell(r["n_models"], 0)]
        + [rate_cell(r["rate"].get(k)) for k in labels]
        + [Cell(signed(won_back(r), 1, "pp") if won_back(r) is not None else "\u2013")]
        + [top1_cell(r["top1"].get(k)) for k in labels]
        for r in found
    ]  # fmt: skip
    headers = [
        "adaptive attack",
        "against",
        ("models", True),
        ("rate, plain attack", True),
        ("rate, plain attack + defence", True),
        ("rate, adaptive + defence", True),
        ("won back", True),
        ("top-1, plain", True),
        ("top-1, plain + defence", True),
        ("top-1, adaptive + defence", True),
    ]
    return "<h3>Adaptive attacks</h3>" + table(
        headers,
        rows,
        "Each adaptive attack behind the defence it adapts to, next to the plain rate attack "
        "(<code>rate_pgd</code>) at the same budget without and with that defence, on the same "
        "models; rates and top-1 against the clean images without defence. <i>Won back</i>: "
        "the adaptive attack's rate minus the plain attack's behind the defence, in points of "
        "the clean payload.",
    )
