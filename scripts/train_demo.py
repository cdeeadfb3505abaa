"""Train the demo model: `python scripts/train_demo.py --device cpu` (see reportgen/demo/train.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from reportgen.demo.train import main  # noqa: E402

if __name__ == "__main__":
    main()
