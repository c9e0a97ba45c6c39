"""Settings for the whole test suite.

OpenMP threads that have finished a parallel region wait for the next one by spinning (GNU libgomp's default). On a
busy machine the spinning thread and the one that has work share a core, and a test made of many small tensor
operations (a few hundred training steps of a tiny network) then runs tens of times slower than on an idle one.
Waiting threads that sleep instead keep the suite's time close to its CPU time whatever the load. This must be set
before torch loads libgomp, hence here, at the top of the root conftest; an explicit setting in the environment wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
