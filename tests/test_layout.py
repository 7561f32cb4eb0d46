"""The package layout stays as docs/contracts.md describes it.

- the ``gram_jax/`` root stays small: at most 12 entries (modules and packages);
- nothing tracked names the outside reading material the project was written from (the repository
  stands alone; docs cite the paper or the released code);
- config preparation has one home: only ``gram_jax/config/`` calls the steps that
  `gram_jax.config.prepare` runs in order, so no entry point can skip or reorder one.
"""

import ast
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gram_jax"
PREPARE_STEPS = ("finalize_config", "apply_fidelity", "validate_config", "resolve_run_length")
# Two names kept out of the repository, spelled so that this file does not contain them.
UNNAMED = ("gram_" + "reference", "stack_" + "notes")


def _tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
    ).stdout
    return [p for p in out.split("\0") if p]


def test_package_root_has_at_most_12_entries():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 12, f"gram_jax/ has {len(entries)} entries: {entries}"


def test_nothing_tracked_names_the_outside_reading_material():
    offenders = []
    for rel in _tracked():
        path = ROOT / rel
        names = [n for n in UNNAMED if n in rel]
        if path.is_file() and not path.is_symlink():
            text = path.read_bytes().decode("utf-8", errors="ignore")
            names += [n for n in UNNAMED if n in text]
        if names:
            offenders.append(f"{rel}: {sorted(set(names))}")
    assert not offenders, offenders


def _step_calls(source: str) -> list[tuple[int, str]]:
    """(line, name) of every call of a `gram_jax.config` preparation step in `source`: a name
    imported from ``gram_jax.config[.*]``, or an attribute of a module bound from there.

    The data pipeline's own ``validate_config`` (the data section alone) is another function.
    """
    tree = ast.parse(source)
    steps: set[str] = set()  # local names of the step functions
    modules: set[str] = {"gram_jax"}  # local names bound to gram_jax or gram_jax.config[.*]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gram_jax"):
            for alias in node.names:
                local = alias.asname or alias.name
                if node.module.startswith("gram_jax.config") and alias.name in PREPARE_STEPS:
                    steps.add(local)
                elif node.module.startswith("gram_jax.config") or alias.name == "config":
                    modules.add(local)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gram_jax"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        if isinstance(fn, ast.Name) and fn.id in steps:
            calls.append((node.lineno, fn.id))
        elif isinstance(fn, ast.Attribute) and fn.attr in PREPARE_STEPS:
            root = fn.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in modules:
                calls.append((node.lineno, fn.attr))
    return calls


def test_the_step_finder_sees_each_way_of_calling():
    source = (
        "from gram_jax.config import validate_config as check, validation\n"
        "import gram_jax.config.fidelity as fid\n"
        "from data_pipelines.config import validate_config\n"
        "check(c)\nvalidation.validate_config(c)\nfid.apply_fidelity(c)\nvalidate_config(c)\n"
    )
    assert _step_calls(source) == [(4, "check"), (5, "validate_config"), (6, "apply_fidelity")]


def test_only_the_config_package_calls_the_preparation_steps():
    offenders = []
    for rel in _tracked():
        if not rel.endswith(".py") or rel.startswith(("gram_jax/config/", "tests/")):
            continue
        for number, name in _step_calls((ROOT / rel).read_text()):
            offenders.append(f"{rel}:{number}: {name}")
    assert not offenders, "call gram_jax.config.prepare instead: " + ", ".join(offenders)
