"""Writes the atlas: atlas.html (self-contained), heads.csv, pairs.csv, montages/*.png and atlas.json
(everything the napari dock needs to browse the result: statistics, exemplars, montage layouts)."""
from __future__ import annotations

import base64
import dataclasses
import functools
import html
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from napari_intr.csv_output import write_csv
from napari_intr.explanation import head_number
from napari_intr.filenames import Slugs

from .aggregate import Atlas, ClassSummary, PairSummary
from .folder import ATLAS_HTML, HEADS_CSV, MONTAGES, PAIRS_CSV, write_atlas_json, write_bytes
from .montage import (
    PATCH,
    MontageCell,
    cell_origin,
    draw_montage,
    patches_for,
    png_bytes,
)
from .statistics import Exemplar
from .tables import HEADS_COLUMNS, PAIRS_COLUMNS, head_rows, pair_rows

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:3px 6px;vertical-align:middle;text-align:left}
tr:nth-child(even){background:#f0f0f0}.stats{font-size:.85em;white-space:nowrap}
img.patch{width:96px;height:96px;border:1px solid #999;image-rendering:auto}
.side{display:inline-block;margin-right:16px}.muted{color:#666;font-size:.85em}
nav a{margin-right:10px}.gap{width:24px}td.patches{white-space:nowrap}
"""




def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _img(patch: bytes, exemplar: Exemplar, label: str) -> str:
    data = base64.b64encode(patch).decode("ascii")
    title = html.escape(f"{exemplar.key} · {label} · peak {exemplar.peak:.4f}")
    return f'<img class="patch" src="data:image/jpeg;base64,{data}" title="{title}" alt="{title}">'


def _cell_entry(cell: MontageCell, gap_after: int | None = None) -> dict:
    """A montage cell for atlas.json, with where its patch lies in the PNG (for clicks in napari)."""
    y, x = cell_origin(cell.row, cell.col, gap_after)
    return {**_plain(cell), "y": y, "x": x, "size": PATCH}


class _MontageWriter:
    """Encodes and writes the montage PNGs on one worker thread while the page is assembled
    (deflate and fsync release the GIL, so on a second core they cost no time). At most
    PENDING montages wait for it, so memory stays that of a few montages."""
    PENDING = 2

    def __init__(self, folder: Path, slug: Slugs):
        self.folder, self.jobs, self.slug = folder, [], slug
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="atlas-montages")

    def write(self, name: str, montage) -> None:
        while len(self.jobs) >= self.PENDING:
            self.jobs.pop(0).result()  # a failed write (e.g. a full disk) raises here
        self.jobs.append(self.pool.submit(lambda: write_bytes(self.folder / name, png_bytes(montage))))

    def __enter__(self) -> _MontageWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            for job in self.jobs:
                job.result()
        finally:
            self.pool.shutdown(wait=True)


def _class_section(summary: ClassSummary, patches: dict, layer: int, montages: _MontageWriter) -> tuple[str, dict]:
    rows, cells, montage_rows = [], [], []
    for head in summary.heads:
        label = f"L{layer} H{head_number(head.head)}"
        consistency = _fmt(head.consistency, 2) + (f" ({html.escape(head.part)})" if head.part else "")
        stats = (f"mean peak {_fmt(head.mean_peak)}<br>median {_fmt(head.median_peak)}<br>"
                 f"spread {_percent(head.mean_spread)}<br>on specimen {_percent(head.on_specimen)}<br>"
                 f"consistency {consistency}<br>patches holding a part {_percent(head.top_covering_part)}<br>"
                 f"<span class=muted>{html.escape(head.consistency_method)}</span>")
        images = "".join(_img(patches[(e.key, tuple(e.box))], e, label) for e in head.top)
        rows.append(f"<tr><th>{label}</th><td class=stats>{stats}</td><td class=patches>{images or '<span class=muted>no images</span>'}</td></tr>")
        row_cells = []
        for col, exemplar in enumerate(head.top):
            cell = MontageCell(head.head, col, exemplar.key, head.head, tuple(exemplar.box), exemplar.peak, "")
            row_cells.append((cell, patches[(exemplar.key, tuple(exemplar.box))]))
            cells.append(_cell_entry(cell))
        consistency_text = "–" if head.consistency is None else f"{head.consistency:.2f}"
        montage_rows.append((f"H{head_number(head.head)}\nmean {_fmt(head.mean_peak)}\ncons. {consistency_text}", row_cells))
    columns = max([len(head.top) for head in summary.heads] + [1])
    name = f"class-{montages.slug(summary.name)}.png"
    montages.write(name, draw_montage(montage_rows, columns))
    accuracy = _percent(summary.accuracy)
    section = (f'<h3 id="class-{montages.slug(summary.name)}">{html.escape(summary.name)}</h3>'
               f"<p class=muted>{summary.images} images, {accuracy} predicted correctly; "
               f"patches: the {columns} images with the highest peak per head, centred on the peak</p>"
               f"<table>{''.join(rows)}</table>")
    return section, {"file": f"{MONTAGES}/{name}", "cells": cells, "columns": columns}


def _pair_section(pair: PairSummary, patches: dict, layer: int, montages: _MontageWriter) -> tuple[str, dict]:
    a, b = html.escape(pair.a), html.escape(pair.b)
    columns = max([len(h.top_a) for h in pair.heads] + [1])
    rows, cells, montage_rows = [], [], []
    for rank, head in enumerate(pair.heads, start=1):
        label = f"L{layer} H{head_number(head.head)}"
        stats = (f"rank {rank}<br>effect size d {_fmt(head.effect_size, 2)}<br>"
                 f"masking drop {_fmt(head.masking_drop)}<br>peak on A {_fmt(head.mean_peak_a)}<br>"
                 f"peak on B {_fmt(head.mean_peak_b)}<br>peak on a part (A) {_percent(head.on_part_a)}<br>"
                 f"patches holding a part (A) {_percent(head.top_a_covering_part)}")
        side_a = "".join(_img(patches[(e.key, tuple(e.box))], e, f"{pair.a} query on {pair.a}") for e in head.top_a)
        side_b = "".join(_img(patches[(e.key, tuple(e.box))], e, f"{pair.a} query on {pair.b}") for e in head.top_b)
        rows.append(f"<tr><th>{label}</th><td class=stats>{stats}</td><td class=patches>{side_a}</td>"
                    f"<td class=gap></td><td class=patches>{side_b}</td></tr>")
        row_cells = []
        for side, exemplars, offset in (("a", head.top_a, 0), ("b", head.top_b, columns)):
            for col, exemplar in enumerate(exemplars):
                cell = MontageCell(rank - 1, offset + col, exemplar.key, head.head, tuple(exemplar.box),
                                   exemplar.peak, side)
                row_cells.append((cell, patches[(exemplar.key, tuple(exemplar.box))]))
                cells.append(_cell_entry(cell, gap_after=columns - 1))
        label = f"#{rank} H{head_number(head.head)}\nd {_fmt(head.effect_size, 2)}\ndrop {_fmt(head.masking_drop)}"
        montage_rows.append((label, row_cells))
    name = f"pair-{montages.slug(pair.a)}--{montages.slug(pair.b)}.png"
    montages.write(name, draw_montage(montage_rows, 2 * columns, gap_after=columns - 1))
    section = (f'<h3 id="pair-{montages.slug(pair.a)}--{montages.slug(pair.b)}">{a} vs {b}</h3>'
               f"<p class=muted>Heads of the {a} query, decoding just {a} and {b}: "
               f"{pair.images_a} images of {a}, {pair.images_b} of {b}, {pair.confused} confused. "
               "Ranked by the masking drop (mean fall of logit A − logit B on A's images when the head's "
               "region is hidden from the decoder), as the Explorer ranks heads; a head whose masking costs "
               "nothing is flagged and ranked last. "
               f"Left: {a}'s images; right: {b}'s images (same query).</p>"
               f"<table><tr><th></th><th></th><th>{a}</th><th></th><th>{b}</th></tr>{''.join(rows)}</table>")
    return section, {"file": f"{MONTAGES}/{name}", "cells": cells, "columns": 2 * columns}


def write_report(atlas: Atlas, out: Path, data_root: Path, meta: dict, patches: dict | None = None) -> dict:
    """Write every output file; returns their paths. patches: (key, box) -> JPEG bytes already cut
    (by the summarising pass); the others are cut from the images here."""
    out = Path(out)
    montage_dir = out / MONTAGES
    montage_dir.mkdir(parents=True, exist_ok=True)
    layer = meta["layer"]
    write_csv(out / HEADS_CSV, HEADS_COLUMNS, head_rows(atlas, layer))
    write_csv(out / PAIRS_CSV, PAIRS_COLUMNS, pair_rows(atlas, layer))
    class_sections, pair_sections, layouts = [], [], {"classes": {}, "pairs": {}}
    patches = patches_for(data_root, [e for summary in atlas.classes for head in summary.heads for e in head.top]
                          + [e for pair in atlas.pairs for head in pair.heads for e in head.top_a + head.top_b],
                          known=patches)
    slug = Slugs()  # one per report: montage names and anchors agree and never collide
    with _MontageWriter(montage_dir, slug) as montages:
        for summary in atlas.classes:
            section, layout = _class_section(summary, patches, layer, montages)
            class_sections.append(section)
            layouts["classes"][summary.name] = layout
        for pair in atlas.pairs:
            section, layout = _pair_section(pair, patches, layer, montages)
            pair_sections.append(section)
            layouts["pairs"][f"{pair.a}\t{pair.b}"] = layout
    # After the last montage is written: the page and atlas.json are built while no encoding runs, so
    # the report's peak memory is the same from run to run (the worker's timing moved it by MBs).
    page = _page(atlas, meta, class_sections, pair_sections, slug)
    write_bytes(out / ATLAS_HTML, page.encode("utf-8"))
    document = {"meta": meta, "images": atlas.images, "skipped": atlas.skipped, "rejected": atlas.rejected,
                "classes": _plain(atlas.classes), "pairs": _plain(atlas.pairs), "montages": layouts}
    atlas_json = write_atlas_json(out, document, default=_json_default)
    return {"html": out / ATLAS_HTML, "heads": out / HEADS_CSV, "pairs": out / PAIRS_CSV,
            "json": atlas_json, "montages": montage_dir}


def _plain(value):
    """Dataclasses as dicts, tuples as lists, for JSON: `dataclasses.asdict` without its deep copy
    of every value (a third of the report's time on a small atlas)."""
    if dataclasses.is_dataclass(value):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@functools.cache
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(kind))


def _json_default(value):
    raise TypeError(f"not JSON-serialisable: {value!r}")


def _page(atlas: Atlas, meta: dict, class_sections: list[str], pair_sections: list[str], slug: Slugs) -> str:
    links = "".join(f'<a href="#class-{slug(c.name)}">{html.escape(c.name)}</a>' for c in atlas.classes)
    pair_links = "".join(f'<a href="#pair-{slug(p.a)}--{slug(p.b)}">{html.escape(p.a)} vs {html.escape(p.b)}</a>'
                         for p in atlas.pairs)
    correct = sum(c.correct for c in atlas.classes)
    accuracy = f"{100 * correct / atlas.images:.1f} %" if atlas.images else "–"
    skipped = (f"<p class=muted>{len(atlas.skipped)} images could not be read and were left out "
               f"(see atlas.json).</p>" if atlas.skipped else "")
    if atlas.rejected:  # counted and listed, never summarised as a species
        listed = ", ".join(html.escape(Path(key).name) for key, _, _ in atlas.rejected[:20])
        more = f", … ({len(atlas.rejected) - 20} more in atlas.json)" if len(atlas.rejected) > 20 else ""
        skipped += (f"<p><b>{len(atlas.rejected)} images are none of the model's {len(atlas.classes)} species</b> "
                    f"(below its calibrated open-set threshold) and are left out of every summary: {listed}{more}.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>INTR trait atlas</title><style>{_STYLE}</style></head>
<body><h1>INTR trait atlas</h1>
<p>Model <b>{html.escape(str(meta['model']))}</b> on <b>{html.escape(str(meta['data']))}</b>:
{atlas.images} images, top-1 accuracy {accuracy}; decoder layer {meta['layer']} of {meta['layers']},
{meta['heads']} heads. Each image was encoded once and decoded for its own class and its predicted class.
Peak: the highest cross-attention weight of a head's map (each map sums to 1). Spread: the share of the
image in the peak-centred box holding half the map's mass. Consistency: {html.escape(meta['consistency'])}.</p>
{skipped}<nav><b>Classes</b> {links}</nav><nav><b>Look-alike pairs</b> {pair_links or '<span class=muted>none</span>'}</nav>
<h2>Classes: what each head looks for</h2>
{''.join(class_sections)}
<h2>Look-alike pairs: the heads that tell A from B</h2>
{''.join(pair_sections) or '<p class=muted>No pair was decoded.</p>'}
<p class=muted>Written by napari-intr {html.escape(str(meta.get('version', '')))} (intr atlas).</p>
</body></html>
"""
