"""Writer process for test_faults.py: votes as fast as it can and prints each rating's UUID only
after add_rating has returned, so every printed UUID is an acknowledged rating.

    python tests/storage/sigkill_writer.py DATABASE_URL COMPARISON_ID
"""

import sys
import uuid

from storage.engine import make_engine
from storage.repository import add_rating, ensure_rater

url, comparison_id = sys.argv[1], int(sys.argv[2])
engine = make_engine(url)
n = 0
while True:  # until the test kills the process
    rater_id = ensure_rater(engine, f"writer-{n}")
    key = uuid.uuid4()
    add_rating(
        engine,
        comparison_id,
        rater_id,
        "a",
        key,
        {"positivity": "a"},
        {"positivity": 1, "brevity": 4},
    )
    print(key, flush=True)
    n += 1
