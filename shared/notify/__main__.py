"""`python -m shared.notify`: the notifier process (shared/notify/service.py)."""

import sys

from shared.notify.service import main

sys.exit(main())
