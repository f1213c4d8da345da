"""Rewrite the config key table in readme.md from tools/utils/config.py SPEC."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.utils.config import markdown_table  # noqa: E402

HEADER = "| key | type | default | meaning |\n|---|---|---|---|\n"

if __name__ == "__main__":
    path = os.path.join(ROOT, "readme.md")
    text = open(path, encoding="utf-8").read()
    text = re.sub(re.escape(HEADER) + r"(\|.*\n)+", lambda m: HEADER + markdown_table() + "\n", text, count=1)
    open(path, "w", encoding="utf-8").write(text)
