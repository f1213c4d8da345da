"""Write docs/configs.md, the table of every config key, from metaheac/config.py:

    python tools/config_doc.py
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from metaheac.config import IGNORED, SPEC  # noqa: E402
from metaheac.files import atomic_write  # noqa: E402

PATH = os.path.join(ROOT, "docs", "configs.md")
INTRO = """# Config keys

Generated from `metaheac/config.py` by `python tools/config_doc.py`; do not
edit by hand. Every key can be set in the YAML (nested under `runner:` /
`hyper_parameters:`) or on the command line with `-o key=value` (YAML
values: `-o hyper_parameters.mlp_dims=[32]`). Relative paths in a YAML file
are relative to that file, those given with `-o` to the working directory.
Unknown keys and wrong types are errors that name the key. The defaults are
the shipped algorithm (config.yaml); `config_paddlerec.yaml` spells out
PaddleRec's recipe.
"""


def _table(keys):
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name in keys:
        spec = SPEC[name]
        shown = "—" if spec.default is None else f"`{spec.default}`"
        check = f" ({spec.check.__doc__})" if spec.check is not None else ""
        rows.append(f"| `{name}` | {spec.type.__name__}{check} | {shown} | {spec.help.replace('|', '/')} |")
    return "\n".join(rows)


def markdown():
    main = [k for k in SPEC if k not in IGNORED]
    return (f"{INTRO}\n## Keys ({len(main)})\n\n{_table(main)}\n\n## PaddleRec's keys, ignored\n\nAccepted so that "
            f"PaddleRec's configs load; they change nothing here.\n\n{_table(IGNORED)}\n")


if __name__ == "__main__":
    atomic_write(PATH, lambda tmp: open(tmp, "w", encoding="utf-8").write(markdown()))
    print(PATH)
