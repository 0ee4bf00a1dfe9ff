"""A report document as PDF with fpdf2 (pure Python): the same title, status, tables and charts as the page.

Text is set in DejaVu Sans when the machine has it (every character of the four languages, arrows and
currency signs); otherwise in the PDF core font Helvetica, which covers Western European text (cp1252).
Charts are the same SVG as the page's, drawn by fpdf2's SVG reader.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from fpdf import FPDF

_METADATA = re.compile(r"<metadata>.*?</metadata>", re.DOTALL)  # RDF fpdf2 does not draw
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/TTF"))


def _font(pdf: FPDF) -> tuple[str, bool]:
    for directory in FONT_DIRS:
        regular, bold = directory / "DejaVuSans.ttf", directory / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            pdf.add_font("DejaVu", "", str(regular))
            pdf.add_font("DejaVu", "B", str(bold))
            return "DejaVu", True
    return "helvetica", False


def render(document) -> bytes:
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    family, unicode_font = _font(pdf)

    def text(value) -> str:
        value = str(value)
        if not unicode_font:
            value = value.replace("→", "->").encode("cp1252", "replace").decode("cp1252")
        return value

    pdf.set_title(text(document["title"]))
    pdf.add_page()
    pdf.set_font(family, "B", 18)
    pdf.cell(0, 10, text(document["title"]), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 11)
    pdf.cell(0, 7, text(document["subtitle"]), new_x="LMARGIN", new_y="NEXT")
    status = document["status"]
    if status.get("text"):
        colour = (227, 244, 232) if status["ok"] else (251, 228, 226) if status["ok"] is False else (255, 244, 214)
        pdf.set_fill_color(*colour)
        pdf.set_font(family, "B", 11)
        pdf.multi_cell(0, 7, text(status["text"]), fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, "", 8)
    for label, value in document["meta"]:
        pdf.multi_cell(0, 5, text("%s: %s" % (label, value)), new_x="LMARGIN", new_y="NEXT")
    for section in document["sections"]:
        pdf.ln(3)
        pdf.set_font(family, "B", 13)
        pdf.cell(0, 8, text(section["title"]), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, "", 9)
        if section.get("note"):
            pdf.multi_cell(0, 5, text(section["note"]), new_x="LMARGIN", new_y="NEXT")
        for table in section["tables"]:
            if not table["cells"] and not table["footer"]:
                continue
            with pdf.table(line_height=4.5) as grid:
                pdf.set_font(family, "B", 8)
                header = grid.row()
                for _key, label in table["columns"]:
                    header.cell(text(label))
                pdf.set_font(family, "", 8)
                for cells in table["cells"]:
                    row = grid.row()
                    for cell in cells:
                        row.cell(text(cell))
                if table["footer"]:
                    row = grid.row()
                    for cell in table["footer"]:
                        row.cell(text(cell))
        for svg in section["charts"]:
            pdf.image(io.BytesIO(_METADATA.sub("", svg).encode("utf-8")), w=160)
    return bytes(pdf.output())
