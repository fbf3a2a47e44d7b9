import sys

from . import missing_requirements

missing = missing_requirements()
if missing:
    print(f"bench.hfserve needs PyTorch and transformers (pip install 'gpucap[torch]'); not installed: "
          f"{', '.join(missing)}", file=sys.stderr)
    raise SystemExit(2)

from .server import main  # noqa: E402 (only once the requirements are known to be there)

raise SystemExit(main())
