import sys

from tfcascade.cli.main import main

sys.exit(main())
