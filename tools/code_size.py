"""Longest modules and functions of the plugin's Python packages.

    python tools/code_size.py [FOLDER ...]      (default: model algorithms)

Prints the longest module (lines) and the longest functions (lines from ``def`` to
the last line of the body, decorators excluded) of each folder.
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def functions(path: Path):
    """``(lines, qualified name)`` of every function and method in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((child.end_lineno - child.lineno + 1, f"{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
    visit(tree, "")
    return found


def main(folders) -> int:
    for folder in folders:
        files = sorted((ROOT / folder).rglob("*.py"))
        modules = sorted(((len(f.read_text(encoding="utf-8").splitlines()), f) for f in files),
                         reverse=True)
        funcs = sorted(((n, f"{f.relative_to(ROOT)}:{name}") for f in files
                        for n, name in functions(f)), reverse=True)
        print(f"{folder}/: longest module {modules[0][1].relative_to(ROOT)} "
              f"({modules[0][0]} lines); longest functions:")
        for n, name in funcs[:3]:
            print(f"  {n:4d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["model", "algorithms"]))
