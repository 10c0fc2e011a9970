"""Entry point of a SageMaker training job (torchrun runs it once per GPU): see spellfix.launch.entry.

Inside the job this file sits at /opt/ml/input/data/code/launch/entry.py next to the bundled spellfix
package, which the line below puts first on the import path.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spellfix.launch.entry import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
