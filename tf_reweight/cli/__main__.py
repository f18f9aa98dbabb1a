"""``python -m tf_reweight.cli``: the ``tf-reweight`` command."""

import sys

from tf_reweight.cli.main import main

sys.exit(main())
