import sys

from planner.commands import main

sys.exit(main())
