"""The ledger (issue 5): a signed, hash-chained record of every hospital, dataset, local
update, vote and checkpoint of a run, verifiable offline.

Pure core: identity.py (keys, node ids, eq. 10 XOR distance, round roles), consensus.py
(eqs. 14-15 vote, jit-safe), transactions.py, block.py, validate.py (`append`). Thin
persistence: store.py (atomic append-only records), digests.py (update and checkpoint
hashes). The training loop calls run_ledger.py; audits use audit.py and
`python -m ccfl_jax.ledger verify|show|head|keys <run_dir>`.
"""
