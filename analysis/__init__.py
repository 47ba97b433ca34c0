"""Does proximity predict the gain midtraining gives? Grid results -> statistics -> figures.

`analysis/` sits on top of `proximity/` (similarity, advantage) and reads what `training/`'s
grid writes (docs/RESULTS.md); neither of them imports it. Commands: `proximity correlate`,
`proximity report`, `proximity recommend`, `proximity cka` (docs/ANALYSIS.md).
"""
