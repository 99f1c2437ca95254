import sys

from pcnn.cli.main import main

sys.exit(main())
