"""The web console served by the gateway at ``/ui``: plain HTML, one CSS file and vanilla ES modules.

Why no framework: the console must work in air-gapped sites and install with ``pip`` alone, so every
asset ships inside this package as it is served (no Node toolchain, no build step, no CDN). Modern
browsers load ES modules natively; the pages are a few hundred lines that call the gateway's own JSON
API with the signed-in key, so a framework would add more bytes than it saves.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
