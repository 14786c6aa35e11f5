import sys

from prune_nas.cli import main

sys.exit(main())
