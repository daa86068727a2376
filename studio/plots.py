"""Plotly figures shared by the UI, the CLI and the docs, and their export to PNG / HTML / CSV."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from studio import StudioError


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


def bars(names: Sequence[str], values: Sequence[float], errors: Sequence[float] | None, title: str,
         y_title: str = "accuracy", reference: Sequence[float] | None = None) -> go.Figure:
    figure = go.Figure(go.Bar(x=list(names), y=list(values), name="now",
                              error_y={"type": "data", "array": list(errors)} if errors is not None else None,
                              text=[f"{v:.3f}" for v in values], textposition="outside"))
    if reference is not None:
        figure.add_trace(go.Bar(x=list(names), y=list(reference), name="reference", opacity=0.45))
    figure.update_layout(title=title, yaxis={"title": y_title, "range": [0, 1.08]}, barmode="group", height=380)
    return figure


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, x_title: str,
           y_title: str) -> go.Figure:
    figure = go.Figure()
    for name, (xs, ys) in series.items():
        figure.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name))
    figure.update_layout(title=title, xaxis={"title": x_title}, yaxis={"title": y_title}, height=380)
    return figure


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def save_figure(figure: go.Figure, path: str | Path) -> Path:
    """HTML (self-contained, offline) or PNG (kaleido with the system Chromium)."""
    path = Path(path)
    if path.suffix == ".html":
        figure.write_html(str(path), include_plotlyjs=True)
    elif path.suffix == ".png":
        browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if browser:
            os.environ.setdefault("BROWSER_PATH", browser)
        try:
            figure.write_image(str(path), width=1000, height=max(500, int(figure.layout.height or 500)))
        except Exception as error:  # kaleido raises its own types when no browser is found
            raise StudioError(f"PNG export needs Chromium (apt-get install chromium): {error}") from error
    else:
        raise StudioError(f"unsupported figure format {path.suffix!r}: use .png or .html")
    return path
