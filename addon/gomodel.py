"""GoModel for mitmproxy: `mitmdump -s addon/gomodel.py`.

The entry point only builds the gateway's four addons (gomodel_gateway/addon.py) and hands them to
mitmproxy side by side; the logic lives in the gomodel_gateway package beside it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gomodel_gateway.addon import GoModel

addons = GoModel().addons
