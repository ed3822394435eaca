"""Child-side runtime of pytest-mpfault.

Everything in this subpackage runs inside the processes a test starts (and in the
test process itself, for the queues it uses).  It depends on nothing else in the
``mpfault`` package and never imports pytest, so that unpickling a fault plan or a
fault-injecting queue in a ``spawn`` or ``forkserver`` child stays cheap and safe.
"""
