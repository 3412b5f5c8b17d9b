"""``python -m worldmodels`` = the ``worldmodels`` command; also ``torchrun --nproc_per_node N -m worldmodels train ...``."""

import sys

from worldmodels.cli import main

sys.exit(main())
