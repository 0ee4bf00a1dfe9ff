"""A report document as one self-contained HTML page: inline CSS and SVG, no script, no network."""

from __future__ import annotations

import jinja2
from markupsafe import Markup

TEMPLATE = """<!DOCTYPE html>
<html lang="{{ doc.lang }}">
<head>
<meta charset="utf-8">
<title>{{ doc.title }} - {{ doc.subtitle }}</title>
<style>
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 1.5em 2em; color: #1d2733; background: #fff; }
h1 { color: #1f4e8c; margin-bottom: 0.1em; }
.subtitle { color: #4a5a6a; font-size: 1.1em; margin-top: 0; }
.status { padding: 0.6em 1em; border-radius: 4px; font-weight: bold; margin: 1em 0; }
.status.ok { background: #e3f4e8; border-left: 6px solid #3a9d5d; }
.status.failed { background: #fbe4e2; border-left: 6px solid #c8443b; color: #8a1f17; font-size: 1.2em; }
.status.unknown { background: #fff4d6; border-left: 6px solid #d9a400; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; font-family: monospace; word-break: break-all; }
section { margin-top: 1.6em; }
h2 { border-bottom: 2px solid #2f6db5; color: #1f4e8c; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; min-width: 40%; }
th, td { border: 1px solid #c9d3dd; padding: 0.25em 0.6em; text-align: left; }
thead th { background: #2f6db5; color: #fff; }
tbody tr:nth-child(even) { background: #f1f5fa; }
tfoot td { font-weight: bold; background: #dde7f3; }
.chart { margin: 0.5em 0; }
.note { color: #4a5a6a; }
</style>
</head>
<body>
<h1>{{ doc.title }}</h1>
<p class="subtitle">{{ doc.subtitle }}</p>
{% if doc.status.text %}<div id="status" class="status {{ 'ok' if doc.status.ok else ('failed' if doc.status.ok is false else 'unknown') }}">{{ doc.status.text }}</div>{% endif %}
<dl class="meta">{% for label, value in doc.meta %}<dt>{{ label }}</dt><dd>{{ value }}</dd>{% endfor %}</dl>
{% for section in doc.sections %}
<section id="section-{{ section.id }}">
<h2>{{ section.title }}</h2>
{% if section.note %}<p class="note">{{ section.note }}</p>{% endif %}
{% for table in section.tables %}
<table id="table-{{ table.id }}" data-rows="{{ table.cells | length }}">
<thead><tr>{% for _key, label in table.columns %}<th>{{ label }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.cells %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
{% if table.footer %}<tfoot><tr>{% for cell in table.footer %}<td>{{ cell }}</td>{% endfor %}</tr></tfoot>{% endif %}
</table>
{% endfor %}
{% for svg in section.charts %}<div class="chart">{{ svg }}</div>{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
_TEMPLATE = _ENV.from_string(TEMPLATE)


def render(document) -> str:
    sections = [dict(s, charts=[Markup(svg) for svg in s["charts"]]) for s in document["sections"]]
    return _TEMPLATE.render(doc=dict(document, sections=sections))
