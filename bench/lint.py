"""Benchmark: `envctl lint` of 200 notebooks side by side with parsing them with nbformat alone.

In one run, best of N each (the machine is shared and noisy):
- nbformat.read of every notebook (JSON and schema validation)  the floor
- envctl's lint of every notebook: IPython's transformation, the syntax tree, all rules
  goal: within 5x of the floor
Prints each time, the ratio and whether it meets its goal.

Run: .venv/bin/python bench/lint.py
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nbformat

from pipeline.spec.lint.model import Context
from pipeline.spec.lint.runner import facts_of, lint_notebook

NOTEBOOKS = 200
RUNS = 3
CELLS = [
    "import os\nimport json\nimport pandas as pd\nimport numpy as np\n"
    "from sklearn.linear_model import LogisticRegression",
    "# parameters\nseed = 7\nmin_accuracy = 0.9\ndata_dir = os.environ.get('DATA_DIR', 'data')",
    "df = pd.DataFrame({'a': np.arange(100), 'b': np.arange(100) % 2})\ndf.describe()",
    "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot(df['a'], df['b'])",
    "!ls -la\n%time total = sum(range(10_000))",
    "def features(frame):\n    out = frame.copy()\n    out['c'] = out['a'] * 2\n    return out\n\n"
    "X = features(df)[['a', 'c']]\ny = df['b']",
    "model = LogisticRegression(max_iter=200, random_state=seed).fit(X, y)\n"
    "score = model.score(X, y)\nprint(score)",
    "assert score >= 0.0, score\nwith open('report.json', 'w') as f:\n    json.dump({'score': score}, f)",
    "%%time\nfor i in range(3):\n    print(i)",
    "results = {k: v for k, v in zip('abc', range(3))}\nresults",
]


def make(folder: Path) -> list[Path]:
    rng = random.Random(7)
    paths = []
    for i in range(NOTEBOOKS):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        cells = []
        for _ in range(rng.randint(8, 30)):
            cells.append(nbformat.v4.new_markdown_cell("## A step\nWhat this part does."))
            cells.append(nbformat.v4.new_code_cell(rng.choice(CELLS)))
        nb.cells = cells
        path = folder / f"nb{i:03}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    return paths


def best(task: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        task()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="envctl-bench-lint-") as scratch:
        paths = make(Path(scratch))
        sbom = {
            "pip": [{"name": n} for n in ("pandas", "numpy", "scikit-learn", "matplotlib")],
            "env": ["HOME"],
        }
        facts = facts_of(sbom)

        def parse() -> None:
            for path in paths:
                nbformat.read(path, as_version=4)

        def lint() -> None:
            for path in paths:
                context = Context(
                    notebook=path.name,
                    modules=facts.modules,
                    distributions=facts.distributions,
                    environment=facts.environment,
                    files=frozenset(),
                )
                lint_notebook(path.read_bytes(), context)

        lint()  # warm: IPython's import and the transformer, once per process
        floor = best(parse)
        linted = best(lint)
        cells = sum(len(nbformat.read(p, as_version=4).cells) for p in paths)
        ratio = linted / floor
        print(f"{NOTEBOOKS} notebooks, {cells} cells")
        print(f"nbformat.read alone   {floor * 1000:8.1f} ms")
        verdict = "met" if ratio <= 5 else "MISSED"
        print(f"envctl lint           {linted * 1000:8.1f} ms  {ratio:5.2f}x  goal <= 5x: {verdict}")


if __name__ == "__main__":
    main()
