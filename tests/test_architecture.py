"""The package's shape: no import cycle, deliberate lazy imports only, light inference."""
import ast
import pathlib
import subprocess
import sys

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "ccfl_jax"
# Function-level imports allowed, with why: config files import configuration.py and should
# not load JAX; matplotlib only where a plot is drawn; optional extras only where used.
LAZY_IMPORTS_ALLOWED = {
    "configuration": {"ccfl_jax.data", "ccfl_jax.federated", "ccfl_jax.ledger", "ccfl_jax",
                      "optax"},
    "reporting": {"matplotlib", "tensorboardX"},
    "main": {"ccfl_jax", "ccfl_jax.models", "ccfl_jax.recorder", "ccfl_jax.training",
             "ccfl_jax.files",
             "ccfl_jax.data.datasets", "ccfl_jax.data.errors", "ccfl_jax.data"},
    "data.cc19": {"tensorflow_datasets"},
    "models.weights.torch_pickle": {"collections"},
}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node) -> list[str]:
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  base = node.module or ""
  return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _top_level_imports() -> dict[str, set[str]]:
  """module -> the ccfl_jax modules it imports at module level."""
  graph = {}
  for path in PACKAGE.rglob("*.py"):
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names.update(n.removeprefix("ccfl_jax.").removeprefix("ccfl_jax")
                     for n in _imported(node) if n.startswith("ccfl_jax"))
    graph[_module_name(path)] = names
  modules = set(graph)
  return {m: {n for n in names if n in modules and n != m} for m, names in graph.items()}


def test_no_import_cycle():
  graph = _top_level_imports()
  state = {}

  def visit(module, path):
    if state.get(module) == "done":
      return
    assert state.get(module) != "open", "import cycle: " + " -> ".join(path + [module])
    state[module] = "open"
    for imported in sorted(graph[module]):
      if not (module.startswith(imported + ".") or imported == ""):  # a package's own parent
        visit(imported, path + [module])
    state[module] = "done"

  for module in sorted(graph):
    visit(module, [])


def test_function_level_imports_are_the_deliberate_lazy_ones():
  found = []
  for path in PACKAGE.rglob("*.py"):
    module = _module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for sub in ast.walk(node):
          if isinstance(sub, (ast.Import, ast.ImportFrom)):
            roots = {n.split(".")[0] if not n.startswith("ccfl_jax") else
                     ".".join(n.split(".")[:2]) for n in _imported(sub) if n}
            allowed = LAZY_IMPORTS_ALLOWED.get(module, set())
            if not all(r in allowed or r.split(".")[0] in allowed for r in roots):
              found.append(f"{module}.{node.name}: {ast.unparse(sub)}")
  assert not found, found


def _modules_after_import(module: str) -> set[str]:
  code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
  return set(result.stdout.split())


def test_inference_loads_neither_the_loop_nor_the_ledger_and_evaluate_not_predict():
  loaded = _modules_after_import("ccfl_jax.inference")
  assert not {m for m in loaded if m in ("ccfl_jax.training", "ccfl_jax.recorder")
              or m.startswith("ccfl_jax.ledger")}
  assert "ccfl_jax.predict" not in _modules_after_import("ccfl_jax.evaluate")
