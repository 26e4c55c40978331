"""Test notebooks read from a commit: malformed JSON, parameters, warnings, kernels."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.spec import model as spec_module
from pipeline.testing.params import MalformedNotebook, assigned_names, load_notebook, parameters_for, plan
from pipeline.testing.stage import common_root
from tests.helpers import DATA

NOTEBOOKS = DATA / "notebooks"


def make_spec(**tests: Any) -> spec_module.Spec:
    data = {
        "image": "nlp.test",
        "build": {
            "dockerfile": "docker/nlp.test/Dockerfile",
            "context": "docker/nlp.test",
            "base": {"local": "a", "gcp": "b"},
        },
        "tests": {"notebooks": ["test-notebooks/nlp.test/*.ipynb"], **tests},
    }
    return spec_module.parse(json.dumps(data), "environments/nlp.test.yaml")


def read(name: str) -> dict[str, Any]:
    return load_notebook((NOTEBOOKS / name).read_bytes(), f"test-notebooks/nlp.test/{name}")


def test_malformed_json_names_line_and_column() -> None:
    with pytest.raises(MalformedNotebook, match=r"malformed.ipynb is not valid JSON: line 4, column \d+"):
        read("malformed.ipynb")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"nbformat": 4}', "not a notebook: no 'cells' list"),
        (b'{"cells": [], "nbformat": 3}', "nbformat 3; papermill needs 4"),
        (b'{"cells": [{"source": "x"}], "nbformat": 4}', "cell 0 has no cell_type"),
        (b'{"cells": "\x80"}', "not UTF-8"),
    ],
)
def test_json_that_is_not_a_notebook(data: bytes, message: str) -> None:
    with pytest.raises(MalformedNotebook, match=message):
        load_notebook(data, "x.ipynb")


def test_per_notebook_parameters_override_by_name_then_path() -> None:
    spec = make_spec(
        parameters={"seed": 1, "rows": 10},
        notebook_parameters={"a.ipynb": {"rows": 20, "x": 1}, "test-notebooks/nlp.test/a.ipynb": {"x": 2}},
    )
    assert parameters_for(spec, "test-notebooks/nlp.test/a.ipynb") == {"seed": 1, "rows": 20, "x": 2}
    assert parameters_for(spec, "test-notebooks/nlp.test/b.ipynb") == {"seed": 1, "rows": 10}


def test_no_parameters_cell_warns_that_papermill_injects() -> None:
    job = plan(
        make_spec(parameters={"seed": 7}), "nb/no_parameters_cell.ipynb", read("no_parameters_cell.ipynb")
    )
    (warning,) = job.warnings
    assert warning.startswith(
        "nb/no_parameters_cell.ipynb has no cell tagged 'parameters'; papermill injects seed"
    )
    assert job.parameters == {"seed": 7}


def test_unknown_parameter_names_warn() -> None:
    spec = make_spec(parameters={"seed": 7, "learning_rate": 0.1, "epochs": 2})
    (warning,) = plan(spec, "nb/unknown_parameter.ipynb", read("unknown_parameter.ipynb")).warnings
    assert warning == (
        "nb/unknown_parameter.ipynb: unknown parameters epochs, learning_rate "
        "(its parameters cell assigns seed); check tests.parameters in the spec"
    )


def test_known_parameters_and_no_parameters_are_quiet() -> None:
    assert plan(make_spec(parameters={"seed": 7}), "nb/passes.ipynb", read("passes.ipynb")).warnings == ()
    assert plan(make_spec(), "nb/no_parameters_cell.ipynb", read("no_parameters_cell.ipynb")).warnings == ()


def test_assigned_names_of_a_parameters_cell() -> None:
    assert assigned_names("a = 1\nb: int = 2\nc, (d, e) = 3, (4, 5)\nf += 1\n# g = 1\n") == {
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
    }
    assert assigned_names("%matplotlib inline\na = 1") is None


def test_kernel_from_spec_then_notebook_then_python3() -> None:
    stuck = read("stuck_kernel.ipynb")
    assert plan(make_spec(kernel="ir"), "nb/x.ipynb", stuck).kernel == "ir"
    assert plan(make_spec(), "nb/x.ipynb", stuck).kernel == "stuck"
    del stuck["metadata"]["kernelspec"]
    job = plan(make_spec(), "nb/x.ipynb", stuck)
    assert job.kernel == "python3"
    assert "names no kernel" in job.warnings[0]


def test_common_root_of_notebook_paths() -> None:
    assert common_root(["t/img/a.ipynb", "t/img/b.ipynb"]) == "t/img"
    assert common_root(["t/img/a.ipynb", "t/img/sub/b.ipynb"]) == "t/img"
    assert common_root(["t/a.ipynb", "u/b.ipynb"]) == ""
    assert common_root(["a.ipynb"]) == ""
