"""Anonymized spending and travel analytics for policymakers (issue 6).

Start with `release.run_release` (the one entry point; its docstring gives the signature,
the input contract and the output layout), `inputs` for the input schemas, `config` for the
rules' parameters and docs/privacy.md for why the rules are what they are. `extract` (with
`journeys`) reads a day out of the ledger database into those inputs; the nightly job and
`jakartaone export` call it through `reconciliation.export.export_day`.
"""
