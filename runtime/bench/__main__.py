"""`python -m runtime.bench [--quick] [--json FILE]` (= `edgewatch bench`)."""

import sys

from runtime.bench import main

sys.exit(main())
