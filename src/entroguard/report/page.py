"""HTML building blocks of the report: escaping, number formats, tables, figures, the page.

The page is self-contained: its style sheet is inline, figures are ``data:`` URIs, and it
loads no script, font or image from anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from entroguard.report.figures import Image

MINUS = "\u2212"

CSS = """
:root { --ink: #1f2328; --muted: #5f6670; --line: #d8dde3; --soft: #f5f7f9;
        --up: #b2182b; --down: #2166ac; --accent: #1f4e9c; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
                    "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 1.9rem; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 1.4rem; margin: 44px 0 10px; padding-bottom: 6px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 1.08rem; margin: 26px 0 8px; }
p { margin: 8px 0; max-width: 80ch; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
       monospace; font-size: 0.88em; background: var(--soft); padding: 1px 4px;
       border-radius: 3px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.note { color: var(--muted); font-style: italic; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px;
          padding: 10px 16px; margin: 16px 0; font-size: 0.95rem;
          display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav.toc a { color: var(--accent); text-decoration: none; white-space: nowrap; }
nav.toc a:hover { text-decoration: underline; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr));
        gap: 8px 40px; }
dl { margin: 8px 0; }
dt { font-weight: 600; margin-top: 8px; }
dd { margin: 2px 0 0 0; color: var(--ink); }
ul.findings { padding-left: 20px; margin: 8px 0; max-width: 90ch; }
ul.findings li { margin: 4px 0; }
.table-wrap { overflow-x: auto; margin: 10px 0 6px; }
table { border-collapse: collapse; font-size: 0.9rem;
        font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; color: var(--muted);
          font-size: 0.86rem; padding-top: 6px; max-width: 100ch; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left;
         white-space: nowrap; }
th { background: var(--soft); font-weight: 600; border-bottom: 2px solid var(--line);
     white-space: normal; vertical-align: bottom; min-width: 4.5em; }
td.num, th.num { text-align: right; }
tbody tr:hover { background: #fafbfc; }
.ci { display: block; color: var(--muted); font-size: 0.78em; }
.up { color: var(--up); }
.down { color: var(--down); }
figure { margin: 14px 0 22px; }
figure img { display: block; max-width: 100%; height: auto;
             border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 6px; max-width: 110ch; }
figcaption b { color: var(--ink); }
footer { margin-top: 48px; color: var(--muted); font-size: 0.85rem;
         border-top: 1px solid var(--line); padding-top: 10px; }
@media print { main { max-width: none; } h2 { break-before: auto; }
               figure { break-inside: avoid; } }
"""


def signed(value: float | None, digits: int = 1, unit: str = "") -> str:
    """``+12.3 %`` / ``−4.0 pp`` with a real minus sign; ``–`` for missing values."""
    if value is None:
        return "\u2013"
    text = f"{value:+.{digits}f}".replace("-", MINUS)
    if text.lstrip("+" + MINUS).strip("0.") == "":
        text = text[1:]
    return f"{text}\u202f{unit}" if unit else text


def number(value: float | None, digits: int = 1) -> str:
    return "\u2013" if value is None else f"{value:,.{digits}f}"


class Cell:
    """A table cell: text (escaped), whether it is numeric, and an optional CSS class."""

    def __init__(self, text: object, num: bool = False, cls: str = "", raw: bool = False):
        self.html = str(text) if raw else escape(str(text))
        self.num = num
        self.cls = cls


def rate_cell(value: float | None, digits: int = 1) -> Cell:
    """A rate change in %: red when the rate rises, blue when it falls."""
    cls = "" if value is None or abs(value) < 0.05 else ("up" if value > 0 else "down")
    return Cell(signed(value, digits, "%"), num=True, cls=cls)


def top1_cell(value: float | None, digits: int = 1) -> Cell:
    """A top-1 change in pp: red when accuracy falls, blue when it rises."""
    cls = "" if value is None or abs(value) < 0.05 else ("down" if value > 0 else "up")
    return Cell(signed(value, digits, "pp"), num=True, cls=cls)


def num_cell(value: float | None, digits: int = 1) -> Cell:
    return Cell(number(value, digits), num=True)


def with_interval(cell: Cell, interval: tuple[float, float] | None,
                  text: Callable[[float, int], str] = number) -> Cell:  # fmt: skip
    """``cell`` with its 95 % confidence interval on a second, smaller line, each end written
    by ``text`` with one decimal (:func:`number`, or :func:`signed` for changes); unchanged
    when there is none."""
    if interval is None:
        return cell
    low, high = (escape(text(x, 1)) for x in interval)
    ci = f'<span class="ci">[{low}, {high}]</span>'
    return Cell(cell.html + ci, num=cell.num, cls=cell.cls, raw=True)


def table(
    headers: Sequence[str | tuple[str, bool]],
    rows: Sequence[Sequence[Cell | str]],
    caption: str = "",
) -> str:
    """An HTML table; a header given as ``(text, True)`` is right-aligned (numeric)."""
    head = []
    for h in headers:
        text, num = (h, False) if isinstance(h, str) else h
        head.append(f"<th{' class=num' if num else ''}>{escape(text)}</th>")
    body = []
    for row in rows:
        cells = []
        for c in row:
            c = c if isinstance(c, Cell) else Cell(c)
            cls = " ".join(x for x in ("num" if c.num else "", c.cls) if x)
            cells.append(f"<td{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{c.html}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{caption}</caption>" if caption else ""
    return (
        f'<div class="table-wrap"><table>{cap}<thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure(image: Image | None, alt: str, caption: str) -> str:
    """An embedded PNG with its caption (``caption`` is HTML); empty if there is no image."""
    if image is None:
        return ""
    return (
        f'<figure><img src="{image.uri}" width="{image.width}" height="{image.height}" '
        f'alt="{escape(alt)}"><figcaption>{caption}</figcaption></figure>'
    )


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def page(title: str, header: str, sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    """The whole document: header, a table of contents, then ``(anchor, title, body)``."""
    toc = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f'<body><main>{header}<nav class="toc">{toc}</nav>{body}'
        f"<footer>{footer}</footer></main></body></html>\n"
    )
