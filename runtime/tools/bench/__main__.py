"""`python -m runtime.tools.bench [--quick] [--json FILE]` (= `edgewatch bench`)."""

import sys

from runtime.tools.bench import main

sys.exit(main())
