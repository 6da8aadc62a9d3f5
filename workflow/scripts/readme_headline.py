"""Copy results/tables/headline.md (written by the aggregate stage) into README.md's results
block, between the two marker lines (tests/test_results_regenerate.py checks they are equal).

Run after the aggregate stage changed the table:  python workflow/scripts/readme_headline.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "results" / "tables" / "headline.md"
README = ROOT / "README.md"
BEGIN = "<!-- headline: results/tables/headline.md, copied by workflow/scripts/readme_headline.py -->\n"
END = "<!-- /headline -->\n"


def block(readme: str) -> str:
    """The README's copy of the table (the text between the markers)."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[start:end]


def main() -> None:
    readme = README.read_text()
    README.write_text(readme.replace(BEGIN + block(readme) + END, BEGIN + TABLE.read_text() + END))


if __name__ == "__main__":
    main()
