import sys

from dkimd.cli import main

sys.exit(main())
