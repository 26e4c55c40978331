"""`envctl lint`: what breaks notebooks in managed runs, found before a build.

Each cell is read through IPython's own input transformation (magics and shell
escapes become calls) and then as a Python syntax tree; no pattern is matched over
code text. `catalog` names the rules, one module per rule family finds them, `runner`
runs them over a spec's notebooks and `report` writes text, JSON and SARIF.
"""
