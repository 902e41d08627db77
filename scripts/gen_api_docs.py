"""Write docs/api.md from the package's docstrings (`python scripts/gen_api_docs.py`).

tests/test_docs.py regenerates the text and fails when docs/api.md differs, so the API page
cannot drift from the code. Every public module is listed, with every public class and
function defined in it (names without a leading underscore; `__all__` where a module has one).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = """# API reference

Generated from the docstrings by `python scripts/gen_api_docs.py`; a test fails when this page
and the code disagree. The functional ops come first, then the pure-PyTorch references, then the
face pipeline's modules.
"""


def public_modules() -> list[str]:
    import pyfacepnp

    names = ["pyfacepnp"]
    for info in pkgutil.walk_packages(pyfacepnp.__path__, "pyfacepnp."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]) or parts[-1] in ("cli",):
            continue
        names.append(info.name)
    order = ["pyfacepnp", "pyfacepnp.ops", "pyfacepnp.reference"]
    return sorted(names, key=lambda n: (next((i for i, o in enumerate(order) if n == o or n.startswith(o + ".")), len(order)), n))


def members(mod) -> list[tuple[str, object]]:
    if hasattr(mod, "__all__"):
        names = list(mod.__all__)
    else:
        names = [n for n, o in vars(mod).items()
                 if not n.startswith("_") and (inspect.isclass(o) or inspect.isfunction(o))
                 and getattr(o, "__module__", None) == mod.__name__]
    out = []
    for n in sorted(names):
        o = getattr(mod, n, None)
        if inspect.isclass(o) or inspect.isfunction(o):
            # Re-exports are documented where they are defined, except in the top-level API.
            if mod.__name__ != "pyfacepnp" and getattr(o, "__module__", mod.__name__) != mod.__name__:
                continue
            out.append((n, o))
    return out


def signature(obj) -> str:
    if inspect.isclass(obj) and issubclass(obj, enum.Enum):
        return ""
    if inspect.isclass(obj) and hasattr(obj, "_fields"):
        return "(" + ", ".join(obj._fields) + ")"
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def doc(obj) -> str:
    d = inspect.getdoc(obj)
    return d.strip() if d else "*(no docstring)*"


def render() -> str:
    lines = [HEADER]
    for name in public_modules():
        mod = importlib.import_module(name)
        mems = members(mod)
        mdoc = inspect.getdoc(mod)
        if not mems and not mdoc:
            continue
        lines.append(f"\n## `{name}`\n")
        if mdoc:
            lines.append(mdoc.strip() + "\n")
        for n, o in mems:
            kind = "class" if inspect.isclass(o) else "function"
            lines.append(f"\n### `{n}{signature(o)}` ({kind})\n")
            lines.append("```text\n" + doc(o) + "\n```\n")
            if inspect.isclass(o) and issubclass(o, enum.Enum):
                for m in o:
                    lines.append(f"- `{m.name}` = {m.value!r}\n")
            elif inspect.isclass(o):
                for mn, mo in sorted(vars(o).items()):
                    if mn.startswith("_") or not (inspect.isfunction(mo) or isinstance(mo, property)):
                        continue
                    if isinstance(mo, property):
                        lines.append(f"- `{mn}` (property): {doc(mo).splitlines()[0]}\n")
                    else:
                        first = doc(mo).splitlines()[0]
                        lines.append(f"- `{mn}{signature(mo)}`: {first}\n")
    return "".join(lines).rstrip() + "\n"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    (ROOT / "docs" / "api.md").write_text(render())
    print("wrote docs/api.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
