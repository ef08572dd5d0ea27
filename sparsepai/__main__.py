import sys

from sparsepai.cli import main

sys.exit(main())
