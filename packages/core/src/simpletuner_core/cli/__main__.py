import sys

from simpletuner_core.cli.main import main

sys.exit(main())
