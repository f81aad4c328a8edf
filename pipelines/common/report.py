"""HTML reports: a Jinja template from pipelines/common/templates with matplotlib figures inlined,
so each report is one self-contained file that a person opens and MLflow stores as an artifact."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TEMPLATES = Path(__file__).parent / "templates"

_env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                   autoescape=select_autoescape(["html", "html.j2"], default=True),
                   trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context) -> str:
    """The page `template` (a file in pipelines/common/templates) with every value HTML-escaped."""
    return _env.get_template(template).render(**context)


def figure(width: float = 6, height: float = 3) -> Figure:
    """A small figure drawn by the Agg backend. Built from matplotlib.figure.Figure, not pyplot, so
    no global backend is switched and nothing stays registered: it is freed once dropped."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def img(fig: Figure, alt: str) -> Markup:
    """`fig` as an <img> with a PNG data URI (a few tens of kB), ready to drop into a template."""
    # Our own five lines: the libraries that embed figures in HTML (mpld3, Plotly's offline
    # pages) add a dependency and JavaScript, where a static image is all a report needs.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Markup('<img src="data:image/png;base64,{}" alt="{}">').format(Markup(data), alt)


def label(text: object) -> str:
    """Text for a matplotlib label with `$` escaped: data (a topic name) is never read as mathtext."""
    return str(text).replace("$", r"\$")
