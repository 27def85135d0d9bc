import sys
from pathlib import Path

# Test helpers (tests/pipeline_repo.py) import as plain modules.
sys.path.insert(0, str(Path(__file__).parent))
