"""``python -m bnpo_trl.evaluation ...``: the same as ``bnpo-trl eval ...``."""

from bnpo_trl.evaluation.cli import main

if __name__ == "__main__":
    main()
