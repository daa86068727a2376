"""Plotly figures shared by the UI, the CLI and the docs, and their export to PNG / HTML / CSV."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from studio import StudioError
from studio.files import atomic_write


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str, measure: str, hover: Sequence[str] | None = None,
            zmin: float | None = -1.0, zmax: float | None = 1.0) -> go.Figure:
    """A square heatmap with the numbers written in each cell and details on hover."""
    matrix = np.asarray(matrix, dtype=float)
    hover = list(hover or labels)
    text = [[f"{hover[i]}<br>{hover[j]}<br>{measure}: {matrix[i, j]:.3f}" for j in range(len(labels))]
            for i in range(len(labels))]
    figure = go.Figure(go.Heatmap(
        z=matrix, x=list(labels), y=list(labels), zmin=zmin, zmax=zmax, colorscale="RdBu_r" if zmin is not None
        else "Viridis", text=np.round(matrix, 2), texttemplate="%{text}" if len(labels) <= 24 else None,
        hovertext=text, hoverinfo="text", colorbar={"title": measure},
    ))
    figure.update_layout(title=title, yaxis={"autorange": "reversed"}, height=max(420, 28 * len(labels) + 160),
                         margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return figure


MARK_SYMBOLS = ("line-ew-open", "diamond-open", "x-thin-open")


def bars(names: Sequence[str], values: Sequence[float], errors: Sequence[float] | None, title: str,
         y_title: str = "accuracy", reference: Sequence[float] | None = None, name: str = "now",
         reference_name: str = "reference", marks: dict[str, Sequence[float | None]] | None = None) -> go.Figure:
    """Bars per name, optionally beside a faded reference bar, with ``marks``: per series one marker per name
    (e.g. "origin alone" and "own tuned prompt"), so a bar's share of a reference is read off the chart."""
    figure = go.Figure(go.Bar(x=list(names), y=list(values), name=name,
                              error_y={"type": "data", "array": list(errors)} if errors is not None else None,
                              text=[f"{v:.3f}" for v in values], textposition="outside"))
    if reference is not None:
        figure.add_trace(go.Bar(x=list(names), y=list(reference), name=reference_name, opacity=0.45))
    for (mark_name, ys), symbol in zip((marks or {}).items(), MARK_SYMBOLS):
        figure.add_trace(go.Scatter(x=list(names), y=[None if y is None else float(y) for y in ys], name=mark_name,
                                    mode="markers", marker={"symbol": symbol, "size": 34, "line": {"width": 3}},
                                    hovertemplate="%{x}: %{y:.3f}<extra>" + mark_name + "</extra>"))
    figure.update_layout(title=title, yaxis={"title": y_title, "range": [0, 1.08]}, barmode="group", height=380)
    return figure


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, x_title: str,
           y_title: str) -> go.Figure:
    figure = go.Figure()
    for name, (xs, ys) in series.items():
        figure.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name))
    yaxis = {"title": y_title}
    if "accuracy" in y_title:  # a fixed scale: a single point or a flat line must not look like a swing
        yaxis["range"] = [0, 1.02]
    figure.update_layout(title=title, xaxis={"title": x_title}, yaxis=yaxis, height=380)
    return figure


def grouped_bars(names: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float] | None]], title: str,
                 y_title: str = "accuracy") -> go.Figure:
    """Side-by-side bars, one group per name and one bar (with an error bar) per series."""
    figure = go.Figure()
    for label, (values, errors) in series.items():
        figure.add_trace(go.Bar(x=list(names), y=list(values), name=label, text=[f"{v:.3f}" for v in values],
                                textposition="outside",
                                error_y={"type": "data", "array": list(errors)} if errors is not None else None))
    figure.update_layout(title=title, yaxis={"title": y_title, "range": [0, 1.08]}, barmode="group", height=380)
    return figure


def sweep_curve(xs: Sequence[float], series: dict[str, Sequence[float]], title: str, current: float | None = None,
                best: float | None = None, x_title: str = "shared coefficient c") -> go.Figure:
    """Accuracy along a coefficient, one line per series, with the current and best positions marked."""
    figure = curves({name: (xs, ys) for name, ys in series.items()}, title, x_title, "accuracy")
    if current is not None:
        figure.add_vline(x=current, line_dash="dash", line_color="black", annotation_text=f"now (c={current:.2f})")
    if best is not None:
        figure.add_vline(x=best, line_dash="dot", line_color="green", annotation_text=f"best (c={best:.2f})",
                         annotation_position="bottom right")
    figure.update_layout(yaxis={"title": "accuracy", "range": [0, 1.02]})
    return figure


def grid_heatmap(matrix: Sequence[Sequence[float]], xs: Sequence[float], ys: Sequence[float], title: str,
                 x_title: str, y_title: str, current: tuple[float, float] | None = None) -> go.Figure:
    """A value landscape over two weights (rows = y, columns = x), numbers in the cells, current point marked."""
    matrix = np.asarray(matrix, dtype=float)
    figure = go.Figure(go.Heatmap(z=matrix, x=list(xs), y=list(ys), colorscale="Viridis", zmin=0, zmax=1,
                                  text=np.round(matrix, 3), texttemplate="%{text}", colorbar={"title": "accuracy"},
                                  hovertemplate=f"{x_title}=%{{x}}<br>{y_title}=%{{y}}<br>accuracy=%{{z:.3f}}"
                                                "<extra></extra>"))
    if current is not None:
        figure.add_trace(go.Scatter(x=[current[0]], y=[current[1]], mode="markers", name="now",
                                    marker={"symbol": "x", "size": 14, "color": "red"}))
    figure.update_layout(title=title, xaxis={"title": x_title}, yaxis={"title": y_title}, height=460)
    return figure


def scatter_map(coords: np.ndarray, records: Sequence[dict], color_by: str, title: str,
                hover_keys: Sequence[str] = ("id", "name", "kind", "task", "origin", "token", "metrics")) -> go.Figure:
    """A 2-D or 3-D scatter of projected points, one trace per value of ``color_by``, details on hover."""
    coords = np.asarray(coords, dtype=float)
    three_d = coords.shape[1] == 3
    figure = go.Figure()
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(str(record.get(color_by)), []).append(index)
    for group, members in sorted(groups.items()):
        hover = ["<br>".join(f"{k}: {records[m][k]}" for k in hover_keys
                             if records[m].get(k) not in (None, "")) for m in members]
        common = {"name": f"{color_by} {group}" if color_by == "origin" else group, "hovertext": hover,
                  "hoverinfo": "text", "mode": "markers"}
        if three_d:
            figure.add_trace(go.Scatter3d(x=coords[members, 0], y=coords[members, 1], z=coords[members, 2],
                                          marker={"size": 5}, **common))
        else:
            figure.add_trace(go.Scatter(x=coords[members, 0], y=coords[members, 1], marker={"size": 10}, **common))
    figure.update_layout(title=title, height=560, legend={"title": color_by})
    return figure


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula (OWASP)


def csv_cell(value: object) -> object:
    """A cell as a spreadsheet should show it: text that starts like a formula (an item named
    ``=HYPERLINK(...)``) gets a leading single quote, so it is shown, never run; numbers, and text that is a plain
    number such as ``-0.25``, are left as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value if value.strip() == value else "'" + value


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """The numbers behind a figure, as CSV (written whole or not at all), every text cell made safe to open in a
    spreadsheet (``csv_cell``): the names in it are anyone's."""
    def write(partial: Path) -> None:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([csv_cell(cell) for cell in header])
            writer.writerows([csv_cell(cell) for cell in row] for row in rows)

    return atomic_write(path, write)


def save_figure(figure: go.Figure, path: str | Path) -> Path:
    """HTML (self-contained, offline) or PNG (kaleido with the system Chromium)."""
    path = Path(path)
    if path.suffix == ".html":
        atomic_write(path, lambda partial: figure.write_html(str(partial), include_plotlyjs=True))
    elif path.suffix == ".png":
        browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if browser:
            os.environ.setdefault("BROWSER_PATH", browser)
        if importlib.util.find_spec("kaleido") is None:
            raise StudioError("PNG export needs the kaleido package: pip install kaleido (HTML and CSV work without it)")
        try:
            height = max(500, int(figure.layout.height or 500))
            # kaleido picks the format from the file name: the temporary name keeps the .png ending
            atomic_write(path, lambda partial: figure.write_image(str(partial), format="png", width=1000,
                                                                  height=height))
        except Exception as error:  # kaleido raises its own types when no browser is found
            raise StudioError(f"PNG export needs Chromium (apt-get install chromium): {error}") from error
    else:
        raise StudioError(f"unsupported figure format {path.suffix!r}: use .png or .html")
    return path
