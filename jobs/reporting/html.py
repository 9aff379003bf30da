"""The analysts' HTML report: one self-contained file, charts drawn as inline SVG.

Why self-contained: the report is mailed around and archived; it must open offline, years
later, on a locked-down machine. So: no scripts at all, no web fonts (the system font
stack), no images other than the inline SVG drawn here. Every figure comes from a
:class:`jobs.reporting.publication.Publication`, i.e. after small-count suppression — this
module never sees an unsuppressed count.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from typing import Any

from jobs.reporting.publication import DIGITAL_REFERENCE, PENDING, Publication

CHANNEL_COLOURS = {
    "DIGITAL": "#2563a6",
    "PAPER": "#d9822b",
    "DEFERRED": "#8a8f98",
    PENDING: "#c8ccd2",
}
TOTAL_COLOUR = "#6b7785"
WITHHELD = "–"  # shown for a withheld cell
W, H = 920, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44


def _fmt(n: Any, unit: str = "") -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return WITHHELD
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.1f}{unit}".replace(",", " ")
    return f"{int(n):,}{unit}".replace(",", " ")


def _nice_ticks(vmax: float, n: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``vmax``."""
    if vmax <= 0:
        return [0, 1]
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(math.ceil(vmax / step - 1e-9) + 1)]


def _value(v: Any) -> float | None:
    if v is None:
        return None
    try:
        if v != v:  # NaN / pd.NA
            return None
    except TypeError:  # pd.NA
        return None
    return float(v)


def _svg_open(title: str, height: int = H) -> str:
    return (
        f'<svg viewBox="0 0 {W} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    )


def _y_axis(ticks: list[float], scale, fmt=lambda t: _fmt(t)) -> list[str]:
    out = []
    for t in ticks:
        y = scale(t)
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{fmt(t)}</text>'
        )
    return out


def _x_labels(labels: list[str], xs: list[float]) -> list[str]:
    every = max(1, math.ceil(len(labels) / 14))
    out = []
    for i, (label, x) in enumerate(zip(labels, xs, strict=True)):
        if i % every == 0:
            short = label[5:] if len(label) == 10 and label[4] == "-" else label
            out.append(
                f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" class="tick" '
                f'text-anchor="middle">{escape(short)}</text>'
            )
    return out


def stacked_bars(
    title: str,
    labels: list[str],
    stacks: list[dict[str, Any]],
    totals: list[Any],
    unit: str,
    colour: str = TOTAL_COLOUR,
) -> str:
    """Vertical bars per label: the published parts stacked by series, the rest of the
    total (the withheld parts together) in ``colour``, a marker where the total is withheld."""
    if not labels:
        return _empty(title)
    vmax = max([_value(t) or 0 for t in totals] + [1])
    ticks = _nice_ticks(vmax)
    plot_h = H - TOP - BOTTOM

    def scale(v: float) -> float:
        return H - BOTTOM - plot_h * v / ticks[-1]

    slot = (W - LEFT - RIGHT) / len(labels)
    bw = max(2.0, slot * 0.7)
    xs = [LEFT + slot * (i + 0.5) for i in range(len(labels))]
    parts = [_svg_open(title), *_y_axis(ticks, scale)]
    for x, label, stack, total in zip(xs, labels, stacks, totals, strict=True):
        tv = _value(total)
        if tv is None:
            parts.append(
                f'<text x="{x:.1f}" y="{H - BOTTOM - 4}" class="withheld" text-anchor="middle">'
                f"{WITHHELD}<title>{escape(label)}: withheld</title></text>"
            )
            continue
        # published parts stacked; what the withheld parts add up to (total minus the
        # published parts, i.e. the sum of at least two withheld cells) as one grey segment
        y0 = H - BOTTOM
        shown = 0.0
        for name, v in stack.items():
            fv = _value(v)
            if fv is None or fv <= 0:
                continue
            h = plot_h * fv / ticks[-1]
            parts.append(
                f'<rect x="{x - bw / 2:.1f}" y="{y0 - h:.1f}" width="{bw:.1f}" '
                f'height="{h:.1f}" fill="{CHANNEL_COLOURS.get(name, colour)}">'
                f"<title>{escape(label)} {escape(name)}: {_fmt(v)} {unit}</title></rect>"
            )
            y0 -= h
            shown += fv
        rest = tv - shown
        if rest > 0:
            h = plot_h * rest / ticks[-1]
            what = "withheld parts" if stack else "total"
            parts.append(
                f'<rect x="{x - bw / 2:.1f}" y="{y0 - h:.1f}" width="{bw:.1f}" '
                f'height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(label)}: {_fmt(rest)} {unit} ({what}); total {_fmt(total)}"
                f"</title></rect>"
            )
    parts += _x_labels(labels, xs)
    parts.append(
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" class="axis"/>'
    )
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2:.0f}" class="unit" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})" text-anchor="middle">{escape(unit)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def share_line(title: str, labels: list[str], shares: list[float | None], reference: float) -> str:
    """A share (0-1) per label as a line with points, broken where withheld, against a
    dashed reference line."""
    if not labels:
        return _empty(title)
    plot_h = H - TOP - BOTTOM

    def scale(v: float) -> float:
        return H - BOTTOM - plot_h * v

    slot = (W - LEFT - RIGHT) / len(labels)
    xs = [LEFT + slot * (i + 0.5) for i in range(len(labels))]
    parts = [
        _svg_open(title),
        *_y_axis([0, 0.25, 0.5, 0.75, 1.0], scale, lambda t: f"{t * 100:.0f} %"),
    ]
    ry = scale(reference)
    parts.append(
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{ry:.1f}" y2="{ry:.1f}" class="reference"/>'
        f'<text x="{W - RIGHT - 4}" y="{ry - 6:.1f}" class="reflabel" text-anchor="end">'
        f"reference {reference * 100:.0f} %</text>"
    )
    segment: list[str] = []
    segments = []
    for x, s in zip(xs, shares, strict=True):
        if s is None:
            if segment:
                segments.append(segment)
            segment = []
        else:
            segment.append(f"{x:.1f},{scale(s):.1f}")
    if segment:
        segments.append(segment)
    for seg in segments:
        parts.append(f'<polyline points="{" ".join(seg)}" class="share"/>')
    for x, label, s in zip(xs, labels, shares, strict=True):
        if s is None:
            parts.append(
                f'<text x="{x:.1f}" y="{H - BOTTOM - 4}" class="withheld" text-anchor="middle">'
                f"{WITHHELD}<title>{escape(label)}: withheld</title></text>"
            )
        else:
            colour = "#1f7a3a" if s >= reference else "#b23b3b"
            parts.append(
                f'<circle cx="{x:.1f}" cy="{scale(s):.1f}" r="3.5" fill="{colour}">'
                f"<title>{escape(label)}: {s * 100:.1f} %</title></circle>"
            )
    parts += _x_labels(labels, xs)
    parts.append(
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" class="axis"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def hbars(title: str, items: list[tuple[str, Any]], unit: str, colours: dict | None = None) -> str:
    """Horizontal bars, one per label (largest first); withheld values are marked."""
    if not items:
        return _empty(title)
    row_h, label_w = 26, 230
    height = TOP + row_h * len(items) + 30
    vmax = max([_value(v) or 0 for _, v in items] + [1])
    ticks = _nice_ticks(vmax)
    span = W - RIGHT - label_w - 70
    parts = [_svg_open(title, height)]
    for t in ticks:
        x = label_w + span * t / ticks[-1]
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{height - 24}" class="grid"/>'
            f'<text x="{x:.1f}" y="{height - 8}" class="tick" text-anchor="middle">{_fmt(t)}</text>'
        )
    for i, (label, v) in enumerate(items):
        y = TOP + i * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" class="label" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        fv = _value(v)
        if fv is None:
            parts.append(
                f'<text x="{label_w + 4}" y="{y + row_h / 2 + 4:.1f}" class="withheld">'
                f"{WITHHELD} withheld</text>"
            )
            continue
        w = span * fv / ticks[-1]
        colour = (colours or {}).get(label, "#2563a6")
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{max(w, 0.5):.1f}" height="{row_h - 8}" '
            f'fill="{colour}"><title>{escape(label)}: {_fmt(v)} {unit}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" class="value">'
            f"{_fmt(v)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _empty(title: str) -> str:
    return f'<p class="empty">No data in this period for “{escape(title)}”.</p>'


# --- tables --------------------------------------------------------------------------------
def crosstab(frame, row: str, col: str, value: str, row_title: str, col_title: str) -> str:
    """An HTML cross table (rows x columns with the All margins) of a published table."""
    if frame is None or frame.empty:
        return '<p class="empty">No data in this period.</p>'
    rows = [r for r in frame[row].unique() if r != "All"] + ["All"]
    cols = [c for c in frame[col].unique() if c != "All"] + ["All"]
    cell = {(r[row], r[col]): (r[value], r["suppressed"]) for r in frame.to_dict("records")}
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        tds = []
        for c in cols:
            v, sup = cell.get((r, c), (None, ""))
            cls = ' class="total"' if "All" in (r, c) else ""
            if sup:
                tds.append(
                    f'<td{cls} title="withheld ({sup})"><span class="w">{WITHHELD}</span></td>'
                )
            else:
                tds.append(f"<td{cls}>{_fmt(_value(v))}</td>")
        th_cls = ' class="total"' if r == "All" else ""
        body.append(f"<tr><th{th_cls}>{escape(str(r))}</th>{''.join(tds)}</tr>")
    return (
        f'<div class="scroll"><table class="xt"><thead><tr><th>{escape(row_title)} ╲ '
        f"{escape(col_title)}</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def plain_table(frame, columns: dict[str, str]) -> str:
    if frame is None or frame.empty:
        return '<p class="empty">No data in this period.</p>'
    head = "".join(f"<th>{escape(t)}</th>" for t in columns.values())
    body = []
    for r in frame.to_dict("records"):
        tds = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, datetime):
                text = v.strftime("%Y-%m-%d %H:%M")
            elif isinstance(v, str):
                text = escape(v)
            else:
                text = _fmt(_value(v))
            tds.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# --- the page ------------------------------------------------------------------------------
CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans",
  sans-serif; margin: 0; color: #1d2430; background: #f6f7f9; line-height: 1.45; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.7rem; margin: 0 0 4px; } h2 { font-size: 1.2rem; margin: 32px 0 6px;
  border-bottom: 1px solid #dde1e6; padding-bottom: 4px; }
.meta { color: #5b6573; margin: 0 0 18px; font-size: .92rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.card { border: 1px solid #dde1e6; border-radius: 8px; padding: 10px 14px; }
.card .n { font-size: 1.6rem; font-weight: 650; } .card .t { color: #5b6573; font-size: .85rem; }
figure { margin: 8px 0 0; } figcaption, .note { color: #4a5462; font-size: .88rem; margin: 4px 0; }
svg { display: block; font-size: 12px; }
svg .grid { stroke: #e6e9ed; } svg .axis { stroke: #8a939f; }
svg .tick, svg .unit { fill: #5b6573; } svg .label { fill: #1d2430; } svg .value { fill: #1d2430; }
svg .withheld { fill: #9aa3ae; font-weight: 700; }
svg .reference { stroke: #b23b3b; stroke-dasharray: 6 4; stroke-width: 1.5; }
svg .reflabel { fill: #b23b3b; } svg .share { fill: none; stroke: #2563a6; stroke-width: 2; }
.legend { display: flex; gap: 16px; font-size: .85rem; margin: 4px 0; flex-wrap: wrap; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 5px;
  vertical-align: -1px; border-radius: 2px; }
table { border-collapse: collapse; font-size: .85rem; margin: 6px 0; }
th, td { border: 1px solid #dde1e6; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f1f3f6; font-weight: 600; } tbody th { text-align: left; }
.total { background: #f7f8fa; font-weight: 600; } .w { color: #9aa3ae; font-weight: 700; }
.scroll { overflow-x: auto; } .empty { color: #8a939f; font-style: italic; }
.box { background: #f3f6fb; border-left: 4px solid #2563a6; padding: 10px 14px; margin: 12px 0;
  font-size: .9rem; }
code { font-size: .85em; }
"""


def _legend(names: list[str]) -> str:
    items = "".join(
        f'<span><i style="background:{CHANNEL_COLOURS.get(n, TOTAL_COLOUR)}"></i>{escape(n.lower())}</span>'
        for n in names
    )
    return f'<div class="legend">{items}<span><i style="background:{TOTAL_COLOUR}"></i>withheld channels together</span><span><b class="w">{WITHHELD}</b> withheld</span></div>'


def _margin(frame, dim: str, other: str, value: str) -> list[tuple[str, Any]]:
    """The margin of ``dim`` (rows where ``other`` is All), as (label, value)."""
    if frame is None or frame.empty:
        return []
    m = frame[(frame[other] == "All") & (frame[dim] != "All")]
    return [(str(r[dim]), r[value]) for r in m.to_dict("records")]


def render_report(pub: Publication) -> str:
    """The whole report as one HTML string."""
    t = pub.tables
    threshold = pub.threshold
    period = (
        f"{pub.date_from or 'first day'} – {pub.date_to or 'last day'}"
        if pub.date_from or pub.date_to
        else "all days in the ledger"
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    refreshed = pub.refreshed_at.strftime("%Y-%m-%d %H:%M UTC") if pub.refreshed_at else "never"

    # certificates per day, by channel
    dc = t["certificates_by_day_channel"]
    days = sorted(d for d in dc["day"].unique() if d != "All") if not dc.empty else []
    channels = [c for c in CHANNEL_COLOURS if not dc.empty and c in set(dc["channel"])]
    cell = {(r["day"], r["channel"]): r["certificates"] for r in dc.to_dict("records")}
    stacks = [{c: cell.get((d, c)) for c in channels} for d in days]
    totals = [cell.get((d, "All")) for d in days]
    per_day = stacked_bars("Certificates issued per day", days, stacks, totals, "certificates")

    # digital share = DIGITAL / all certificates of the day, where both are published
    shares = []
    for d in days:
        dig, tot = _value(cell.get((d, "DIGITAL"))), _value(cell.get((d, "All")))
        shares.append(dig / tot if dig is not None and tot else None)
    dig_all, tot_all = _value(cell.get(("All", "DIGITAL"))), _value(cell.get(("All", "All")))
    share_all = dig_all / tot_all if dig_all is not None and tot_all else None
    share_chart = share_line(
        "Share of certificates delivered digitally, per day", days, shares, DIGITAL_REFERENCE
    )

    people = t["people_reached_by_day"]
    p_days = [r for r in people.to_dict("records") if r["day"] != "All"]
    people_chart = stacked_bars(
        "People reached for the first time, per day",
        [r["day"] for r in p_days],
        [{} for _ in p_days],
        [r["new_persons"] for r in p_days],
        "people",
        colour="#3a7d6b",
    )

    qr = t["quarantine_by_day_reason"]
    reasons = sorted(_margin(qr, "reason", "day", "entries"), key=lambda x: -(_value(x[1]) or 0))
    q_chart = hbars("Quarantined records by reason", reasons, "records")

    outcomes = _margin(dc, "channel", "day", "certificates")
    outcome_chart = hbars(
        "Certificates by delivery outcome", outcomes, "certificates", CHANNEL_COLOURS
    )
    att = t["delivery_attempts_by_channel_status"]
    attempts = _margin(att, "status", "channel", "attempts")
    attempts_chart = hbars("Delivery attempts by status", attempts, "attempts")

    runs = t["runs"]
    run_items = (
        [(r["run"], r["certificates_per_second"]) for r in runs.to_dict("records")]
        if not runs.empty
        else []
    )
    throughput_chart = hbars(
        "Throughput per run (certificates per second of wall time)",
        run_items,
        "certificates/s",
    )
    step_cols = [c for c in runs.columns if c.endswith("_seconds") and c != "wall_seconds"]
    run_columns = {
        "run": "run",
        "started_at": "started (UTC)",
        "state": "state",
        "batches": "batches",
        "certificates": "certificates",
        "wall_seconds": "wall time (s)",
        "certificates_per_second": "certificates/s",
        **{c: f"{c.removesuffix('_seconds')} (s)" for c in sorted(step_cols)},
    }

    f = pub.figures
    share_text = f"{share_all * 100:.1f} %" if share_all is not None else WITHHELD
    cards = [
        (_fmt(f.get("certificates")), "certificates issued"),
        (_fmt(f.get("people_new")), "people reached (first certificate in period)"),
        (_fmt(f.get("people_digital")), "of them reached digitally"),
        (share_text, f"delivered digitally (reference {DIGITAL_REFERENCE * 100:.0f} %)"),
        (_fmt(f.get("quarantine_entries")), "records quarantined"),
        (_fmt(f.get("delivery_attempts")), "delivery attempts"),
    ]
    cards_html = "".join(
        f'<div class="card"><div class="n">{escape(n)}</div><div class="t">{escape(label)}</div></div>'
        for n, label in cards
    )
    downloads = "".join(
        f'<li><code>{escape(name)}</code>: <a href="data/{escape(name)}.csv">CSV</a> · '
        f'<a href="data/{escape(name)}.parquet">Parquet</a></li>'
        for name in t
    )
    lat = t["delivery_latency"]

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bevis — certificate issuance report ({escape(period)})</title>
<style>{CSS}</style></head>
<body><main>
<h1>Certificate issuance report</h1>
<p class="meta">Period: <b>{escape(period)}</b> (calendar days in UTC) · figures from the
issuance ledger, refreshed {escape(refreshed)} · generated {escape(generated)} ·
small counts below <b>{threshold}</b> withheld.</p>

<div class="cards">{cards_html}</div>

<div class="box"><b>How to read withheld cells ({WITHHELD}).</b> To protect individuals, no
count from 1 to {threshold - 1} is published (<i>primary suppression</i>). Where a total and
the other cells of its row or column would let a reader work such a count out, further cells
are withheld too (<i>secondary suppression</i>), chosen so that no withheld cell can be
computed from any published total. Zeros are published: they count nobody. Totals are
exact sums of all cells, published and withheld. Shares are shown only where both of their
counts are published.</div>

<h2>Certificates issued per day</h2>
<figure>{per_day}{_legend(channels)}
<figcaption>Certificates signed per calendar day, stacked by how they were delivered
(digital mailbox, paper, deferred to a later run, delivery not finished). Where some of a
day's channels are withheld, they are shown together as one grey segment.</figcaption></figure>

<h2>People reached</h2>
<figure>{people_chart}
<figcaption>Distinct people (counted once, by their pseudonymous id in the ledger) by the day
of their first certificate. People reached for the first time in the period:
<b>{_fmt(f.get("people_new"))}</b>, of whom <b>{_fmt(f.get("people_digital"))}</b> have received at
least one certificate digitally.</figcaption></figure>

<h2>Digital share over time</h2>
<figure>{share_chart}
<figcaption>Certificates delivered to a digital mailbox as a share of all certificates issued
that day; the dashed line is the {DIGITAL_REFERENCE * 100:.0f} % reference that management
follows. Green points meet it, red ones do not. Period share: <b>{share_text}</b>.</figcaption>
</figure>

<h2>Quarantine reasons</h2>
<figure>{q_chart}
<figcaption>Records held back from issuance, by reason code (a whole order is held back when
one of its rows fails; a record can be held for more than one reason).</figcaption></figure>
{crosstab(qr, "day", "reason", "entries", "day", "reason")}

<h2>Delivery outcomes</h2>
<figure>{outcome_chart}
<figcaption>Each certificate ends in one outcome: DIGITAL (digital mailbox), PAPER (print
queue), DEFERRED (to be tried in a later run), PENDING (not finished yet).</figcaption></figure>
<figure>{attempts_chart}
<figcaption>Every delivery attempt (a certificate may need several: a failed call is retried,
an unreachable recipient falls back to paper).</figcaption></figure>
{crosstab(att, "status", "channel", "attempts", "status", "channel")}
<p class="note">Latency of timed attempts (milliseconds; “p90 ≤ 120” means 90 % of attempts
took at most 120 ms; buckets about 9 % wide; shown where at least {threshold} attempts were
timed).</p>
{plain_table(lat, {"channel": "channel", "status": "status", "p50_ms_le": "p50 ≤ ms", "p90_ms_le": "p90 ≤ ms", "p99_ms_le": "p99 ≤ ms"})}
{crosstab(t["certificates_by_operator_channel"], "operator", "channel", "certificates", "operator", "outcome")}

<h2>Throughput</h2>
<figure>{throughput_chart}
<figcaption>Certificates of each run divided by the run's wall time (start to finish).
Step times add up the time of every batch of that step.</figcaption></figure>
{plain_table(runs, run_columns)}

<h2>Who received certificates</h2>
<p class="note">Certificates by county (two-digit county code) and age band at vaccination.</p>
{crosstab(t["certificates_by_county_age_band"], "county", "age_band", "certificates", "county", "age band")}
<p class="note">Certificates by vaccine product and dose (dose number / total doses in series).</p>
{crosstab(t["certificates_by_product_dose"], "product", "dose", "certificates", "product", "dose")}
<p class="note">Certificates by type (v vaccination, t test, r recovery) and outcome.</p>
{crosstab(t["certificates_by_type_channel"], "cert_type", "channel", "certificates", "type", "outcome")}

<h2>Data and method</h2>
<ul class="note">
<li>Source: the issuance ledger (certificates, delivery attempts, quarantine, runs), aggregated
into the reporting tables; never counts handed between tasks, so a report after a partial rerun
is right.</li>
<li>No identity data is published: no names, dates of birth, identity numbers or pseudonymous ids.</li>
<li>Every count table is suppressed together with the tables it shares totals with.</li>
<li>Downloads for BI tools (same suppression; withheld cells are empty with
<code>suppressed</code> = primary/secondary/linked; <code>All</code> marks a total):
<ul>{downloads}</ul></li>
</ul>
</main></body></html>
"""
