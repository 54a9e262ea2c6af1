"""Train and test a recbole-attn or RecBole model: ``python run_recbole_attn.py --model=AttRec``."""

import sys

from recbole_attn.cli import main

if __name__ == "__main__":
    sys.exit(main())
