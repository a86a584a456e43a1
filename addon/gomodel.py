"""GoModel for mitmproxy: `mitmdump -s addon/gomodel.py`.

The entry point only builds the addon; the logic lives in the gomodel_gateway package beside it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gomodel_gateway.addon import GoModel

addons = [GoModel()]
