"""``python -m ipm_app``: same as the release's ``bin/ipm-app`` launcher."""

import sys

from ipm_app.service import main

sys.exit(main())
