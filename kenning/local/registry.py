"""Local-feature families and matchers by name: what `local.method` may be, and where each lives.

A leaf that imports nothing, so the config checks a name before anything heavy loads; a family's
module (OpenCV, a network) is imported only when its extractor is built (`extractor.py`). Adding a
family is one module defining `EXTRACTOR` and one line here.
"""

from __future__ import annotations

EXTRACTORS: dict[str, str] = {
    "sift": "kenning.local.sift",
    "aliked": "kenning.local.aliked",
    "disk": "kenning.local.disk",
    "xfeat": "kenning.local.xfeat",
    "sift+disk": "kenning.local.joined",
}  # local.method -> module defining EXTRACTOR
MATCHERS: dict[str, str] = {
    "lnbnn": "kenning.local.lnbnn",
    "joined": "kenning.local.joined",
}  # an extractor's matcher -> module defining MATCHER
