"""Submit a SageMaker training job for a recipe (same as ``spellfix launch sagemaker ...``).

    python launch/sagemaker.py --recipe bart-base-8xv100 --role arn:aws:iam::123456789012:role/SageMaker \
        --train s3://my-bucket/spellfix/train/ --spot --dry-run

See docs/sagemaker.md and spellfix/launch/sagemaker.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spellfix.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["launch", "sagemaker", *sys.argv[1:]]))
